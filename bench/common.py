"""Shared helpers of the benchmarks: machine line and appending to BENCHMARKS.md."""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"


def machine() -> str:
    """A one-line description of this machine."""
    python = platform.python_version()
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {python}"


def record(title: str, body: str) -> None:
    """Append a dated section with the command that produced it to BENCHMARKS.md."""
    module = Path(sys.argv[0]).stem
    command = " ".join(["python -m", f"bench.{module}", *sys.argv[1:]])
    stamp = datetime.date.today().isoformat()
    with open(BENCHMARKS, "a") as handle:
        handle.write(
            f"\n### {title} ({stamp})\n\n`{command}` on {machine()}\n\n{body}\n"
        )


def median_seconds(
    fn: Callable[[], object], repeats: int, warm_up: bool = False
) -> float:
    """Median wall seconds of ``repeats`` calls of ``fn`` (optionally warmed up)."""
    if warm_up:
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def record_rows(title: str, rows: list[str], enabled: bool = True) -> None:
    """:func:`record` a Markdown table given as its lines, when ``enabled``."""
    if enabled:
        record(title, "\n".join(rows))


def table_header(*columns: str) -> list[str]:
    """The first two lines of a Markdown table with these column names."""
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]

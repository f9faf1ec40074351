"""Shared helpers of the benchmarks: machine line and appending to BENCHMARKS.md."""

from __future__ import annotations

import datetime
import os
import platform
import sys
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

"""The run directory: atomic writes of metrics, matrix and diagnostics."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from fcit_flower.filemode import follow_umask
from fcit_flower.tasks.metrics import summarize
from fcit_flower.tasks.schedule import Schedule


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write ``path`` through ``write(handle)`` into a temp file, fsync, rename.

    A crash leaves either the old file or the new one, never a partial one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        follow_umask(fd)  # mkstemp's 0600 would make every result private
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def atomic_write_json(path: Path, payload: Any) -> None:
    """Atomically write ``payload`` as indented JSON."""
    atomic_write_text(path, json.dumps(payload, indent=1, sort_keys=False) + "\n")


def matrix_csv(tasks: tuple[str, ...], rows: list[list[float]]) -> str:
    """The accuracy matrix as CSV: one row per stage, one column per task."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["after_stage", *tasks])
    for stage, row in enumerate(rows, start=1):
        writer.writerow([stage, *(f"{v:.2f}" for v in row)])
    return buffer.getvalue()


def write_results(
    run_dir: Path,
    *,
    config: dict[str, Any],
    schedule: Schedule,
    rows: list[list[float]],
    extra: dict[str, Any],
    strict_rows: list[list[float]] | None = None,
) -> dict[str, Any]:
    """Write ``metrics.json`` and ``accuracy_matrix.csv`` (partial runs too).

    ``strict_rows``: the same matrix under the strict reading of the scores
    (``strict_matrix`` and ``strict`` = its Last/Avg/BWT in ``metrics.json``).

    Returns
    -------
    dict
        The metrics payload; ``complete`` tells whether every stage was evaluated.
    """
    complete = len(rows) == schedule.num_stages
    payload: dict[str, Any] = {
        "tasks": list(schedule.tasks),
        "accuracy_matrix": rows,
        "complete": complete,
        # 1-based stage after which each task was last trained (forgetting plots).
        "learned_at_stage": [s + 1 for s in schedule.learned_at()],
    }
    if rows:
        stages = len(rows)
        learned = [min(s, stages - 1) for s in schedule.learned_at()]
        seen = schedule.seen_columns()[:stages]
        payload.update(summarize(np.asarray(rows), seen, learned))
        if strict_rows:
            payload["strict_matrix"] = strict_rows
            payload["strict"] = summarize(np.asarray(strict_rows), seen, learned)
    payload["config"] = config
    payload.update(extra)
    atomic_write_json(run_dir / "metrics.json", payload)
    atomic_write_text(run_dir / "accuracy_matrix.csv", matrix_csv(schedule.tasks, rows))
    return payload

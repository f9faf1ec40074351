"""Shared helpers of the benchmarks: machine line and appending to BENCHMARKS.md."""

from __future__ import annotations

import datetime
import functools
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fcit_flower.config import RunConfig

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


def run_inprocess(values: dict[str, Any], results: Path, name: str) -> dict[str, Any]:
    """Run the real ServerApp and ClientApp in one process; the run's metrics.json.

    The same code and numbers as ``flwr run`` without Flower's runtime (the
    identity benchmark in BENCHMARKS.md checks that), about 4x faster on 2 cores.
    """
    import torch
    from flwr.app import Context, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    from fcit_flower.client_app import app as client_app
    from fcit_flower.config import RunConfig
    from fcit_flower.inprocess import InProcessGrid
    from fcit_flower.server_app import main as server_main

    # One thread, as each simulated client gets under `flwr run` (1 CPU per
    # client): the same numbers whatever OMP_NUM_THREADS the shell sets.
    torch.set_num_threads(1)
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 1
    config = {**values, "results-dir": str(results), "run-name": name}
    grid = InProcessGrid(client_app, RunConfig.from_mapping(config).num_clients, config)
    context = Context(
        run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=config
    )
    server_main(grid, context)
    return dict(json.loads((results / name / "metrics.json").read_text()))


def diagonal(metrics: dict[str, Any]) -> list[float]:
    """Each task's score right after the stage that trained it (plasticity)."""
    matrix = metrics["accuracy_matrix"]
    return [
        matrix[stage - 1][task]
        for task, stage in enumerate(metrics["learned_at_stage"])
        if stage - 1 < len(matrix)
    ]


def mean(values: list[float]) -> float:
    """The mean of ``values`` (NaN for none)."""
    return statistics.fmean(values) if values else float("nan")


def parse_overrides(text: str) -> dict[str, Any]:
    """``"key=value key=value"`` as a run-config mapping (values coerced later)."""
    overrides: dict[str, Any] = {}
    for item in text.split():
        key, _, value = item.partition("=")
        overrides[key] = value
    return overrides


def run_name(values: dict[str, Any]) -> str:
    """The results folder of a benchmark run: method, seed, then the other keys."""
    rest = {k: v for k, v in values.items() if k not in ("method", "seed")}
    parts = [str(values["method"]), f"s{values.get('seed', 0)}"]
    return "-".join([*parts, *(f"{k}{v}" for k, v in rest.items())])


def run_cached(values: dict[str, Any], results: Path) -> dict[str, Any]:
    """:func:`run_inprocess`, reusing a finished run of the same full config."""
    from fcit_flower.config import RunConfig
    from fcit_flower.launch.recovery import finished_metrics

    name = run_name(values)
    where = {"results-dir": str(results), "run-name": name}
    config = RunConfig.from_mapping({**values, **where})
    metrics = finished_metrics(config)
    if metrics is not None:
        _check_same_base(results / name, config)
        return metrics
    return run_inprocess(values, results, name)


@functools.cache
def _this_base_digests() -> dict[str, str] | None:
    """This machine's built tiny base's weight digests (None if not built yet)."""
    from fcit_flower.models.tiny import built_tiny_base
    from fcit_flower.report.manifest import base_weights

    folder = built_tiny_base()
    if folder is None:
        return None
    digests: dict[str, str] | None = base_weights(folder).get("weights_sha256")
    return digests


def _check_same_base(run_dir: Path, config: RunConfig) -> None:
    """Exit in one line if a finished run trained another tiny base than this one.

    The reuse key is the run-config, which does not name the base's weights: a
    results folder kept from another machine or kernel setting would otherwise
    be mixed into a table silently.
    """
    if config.model != "tiny":
        return
    try:
        manifest = json.loads((run_dir / "manifest.json").read_text())
    except (OSError, ValueError):
        return
    recorded = (manifest.get("base") or {}).get("weights_sha256")
    current = _this_base_digests()
    if recorded and current and recorded != current:
        raise SystemExit(
            f"{run_dir / 'manifest.json'}: base.weights_sha256 is another base's "
            "than this machine's; pass another --results-dir to recompute"
        )

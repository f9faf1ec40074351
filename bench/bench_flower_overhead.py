"""Flower overhead: the same run in a plain Python loop vs. through ``flwr run``.

Both sides run the real ServerApp and ClientApp code with the same config, seed and
clients: in-process (``python -m fcit_flower.inprocess``, the ClientApp called
directly) and through Flower's simulation engine (a private SuperLink, ``flwr run``,
Ray actors with 1 CPU each). Each is a fresh process tree, so both pay Python,
torch and model start-up. Wall time is split at the log lines both print:

- start-up: until the first round is configured (imports, data, base model,
  SuperLink and Ray for Flower, client discovery);
- rounds: per-round wall time from the strategy (``round_timings`` in
  ``metrics.json``), with the ClientApp handler time inside it;
- evaluation and the rest: what remains until the run is done.

The numbers (and the identical accuracy matrices) are printed and appended to
BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import record
from fcit_flower.cli import parse_overrides
from fcit_flower.config import RunConfig
from fcit_flower.launch.simulation import run_simulation_app

ROOT = Path(__file__).resolve().parents[1]
FIRST_ROUND = "configure_train: stage 1 round 1"
DONE = "done: Last"


class StampedLines:
    """A text sink that remembers when each line arrived."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.lines: list[tuple[float, str]] = []

    def write(self, text: str) -> int:
        for line in text.splitlines():
            self.lines.append((time.monotonic() - self.started, line))
        return len(text)

    def flush(self) -> None:
        """Nothing buffered."""

    def first(self, marker: str) -> float:
        return next(t for t, line in self.lines if marker in line)


def split(lines: StampedLines, metrics: dict[str, Any], wall: float) -> dict:
    rounds = metrics["round_timings"]
    start = lines.first(FIRST_ROUND)
    done = lines.first(DONE)
    round_total = sum(r["round_seconds"] for r in rounds)
    return {
        "wall": wall,
        "startup": start,
        "rounds": round_total,
        "client_sum": sum(r["client_seconds_sum"] for r in rounds),
        "client_max": sum(r["client_seconds_max"] for r in rounds),
        "aggregate": sum(r["aggregate_seconds"] for r in rounds),
        "evaluation_rest": done - start - round_total,
        "teardown": wall - done,
    }


def run_inprocess(config: dict[str, Any]) -> tuple[dict, dict]:
    started = time.monotonic()
    lines = StampedLines(started)
    process = subprocess.Popen(
        [sys.executable, "-m", "fcit_flower.inprocess", json.dumps(config)],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    for line in process.stderr:
        lines.write(line)
    if process.wait() != 0:
        raise RuntimeError(
            "in-process run failed:\n"
            + "\n".join(line for _, line in lines.lines[-20:])
        )
    wall = time.monotonic() - started
    metrics = json.loads(
        (Path(config["results-dir"]) / config["run-name"] / "metrics.json").read_text()
    )
    return split(lines, metrics, wall), metrics


def run_flower(config: dict[str, Any]) -> tuple[dict, dict]:
    started = time.monotonic()
    lines = StampedLines(started)
    outcome = run_simulation_app(
        ROOT,
        config,
        num_supernodes=int(config["num-clients"]),
        timeout_s=3600,
        stream_to=lines,  # type: ignore[arg-type]
    )
    if not outcome.completed:
        raise RuntimeError(
            f"Flower run failed: {outcome.status}\n{outcome.log[-2000:]}"
        )
    wall = time.monotonic() - started
    metrics = json.loads(
        (Path(config["results-dir"]) / config["run-name"] / "metrics.json").read_text()
    )
    return split(lines, metrics, wall), metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="finetune")
    parser.add_argument("--run-config", default="", help="'key=value ...' overrides")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        values = {
            **RunConfig().to_mapping(),
            **parse_overrides(args.run_config),
            "method": args.method,
            "results-dir": tmp,
        }
        RunConfig.from_mapping(values)  # fail early on a bad override
        plain, plain_metrics = run_inprocess({**values, "run-name": "plain"})
        flower, flower_metrics = run_flower({**values, "run-name": "flower"})
    same = plain_metrics["accuracy_matrix"] == flower_metrics["accuracy_matrix"]
    labels = {
        "wall": "whole run",
        "startup": "start-up (until round 1 is configured)",
        "rounds": "training rounds (strategy wall time)",
        "client_sum": "  ClientApp handler time, sum over clients",
        "client_max": "  ClientApp handler time, slowest client per round",
        "aggregate": "  validation + aggregation on the server",
        "evaluation_rest": "evaluation after each stage + the rest",
        "teardown": "after the last stage (Flower: stopping the SuperLink, Ray)",
    }
    lines = [
        f"{args.method}, {values['num-clients']} clients, "
        f"{values['clients-per-round']} per round, "
        f"{values['rounds-per-stage']} rounds per stage, num-stages "
        f"{values['num-stages']} (0 = all); "
        f"identical accuracy matrices: {same}.",
        "",
        "| phase | in-process s | Flower s | Flower / in-process |",
        "|---|---|---|---|",
    ]
    for key, label in labels.items():
        ratio = flower[key] / plain[key] if plain[key] > 0.05 else float("nan")
        lines.append(
            f"| {label} | {plain[key]:.1f} | {flower[key]:.1f} | {ratio:.2f}x |"
        )
    steady_plain = plain["wall"] - plain["startup"] - plain["teardown"]
    steady_flower = flower["wall"] - flower["startup"] - flower["teardown"]
    lines.append(
        f"\nWithout start-up and teardown: {steady_plain:.1f} s vs "
        f"{steady_flower:.1f} s "
        f"= {steady_flower / steady_plain:.2f}x; whole run "
        f"{flower['wall'] / plain['wall']:.2f}x (goal <= 1.10x)."
    )
    body = "\n".join(lines)
    print(body)
    record("Flower overhead: in-process loop vs flwr run simulation", body)


if __name__ == "__main__":
    main()

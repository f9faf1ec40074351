"""Deployment overhead per round: a ClientApp process per message vs a site worker.

A real deployment on loopback (TLS, node authentication, subprocess isolation; the
kit of :mod:`fcit_flower.launch.deployment`), the same run twice: each message
handled in the fresh ClientApp process Flower starts for it (imports torch,
loads the base), and forwarded to each site's long-lived worker
(:mod:`fcit_flower.site_worker`, node-config ``site-worker``). Per round: the
strategy's wall time and the ClientApp handler time inside it (``round_timings``
in ``metrics.json``). Apart, in fresh processes (median of 3): what a ClientApp
process pays before any work: Python and Flower, the handlers' imports (torch,
transformers, PEFT), and loading the base.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import record, table_header
from fcit_flower.launch.deployment import Deployment
from fcit_flower.site_worker import WORKER_KEY

ROOT = Path(__file__).resolve().parents[1]
RUN: dict[str, Any] = {
    "method": "disco",
    "num-clients": 2,
    "clients-per-round": 2,
    "rounds-per-stage": 2,
    "num-stages": 2,
    "train-size": 40,
    "test-size": 10,
}
# What a fresh ClientApp process pays before any work, step by step.
STEPS = {
    "Python + Flower": "import flwr.app, flwr.clientapp",
    "+ handlers (torch, transformers, PEFT)": "import fcit_flower.client_handlers",
    "+ base loaded": (
        "import fcit_flower.client_handlers\n"
        "from fcit_flower.config import RunConfig\n"
        "from fcit_flower.runtime import prepare_runtime\n"
        f"prepare_runtime(RunConfig.from_mapping({RUN!r}), ('train',))"
    ),
}


def fresh_process_seconds(code: str, repeats: int = 3) -> float:
    """Median wall seconds of a fresh interpreter running ``code``."""
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def deployed_run(results: Path, name: str, workers: list[Path] | None) -> dict:
    """One loopback deployment run; its metrics and wall seconds."""
    processes = []
    try:
        for path in workers or []:
            command = [sys.executable, "-m", "fcit_flower.site_worker"]
            worker = subprocess.Popen(
                [*command, "--socket", str(path)],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert worker.stdout is not None and "listening" in worker.stdout.readline()
            processes.append(worker)
        with Deployment() as deployment:
            deployment.start_superlink(num_keys=2)
            for key in (1, 2):
                node: dict[str, Any] = {"partition-id": key - 1, "num-partitions": 2}
                if workers:
                    node[WORKER_KEY] = str(workers[key - 1])
                deployment.register(key)
                deployment.start_supernode(key, node)
            started = time.monotonic()
            outcome = deployment.run(
                ROOT, {**RUN, "results-dir": str(results), "run-name": name}, 1800
            )
            wall = time.monotonic() - started
    finally:
        for worker in processes:
            worker.terminate()
            worker.wait(timeout=30)
    if not outcome.completed:
        raise RuntimeError(f"{name}: {outcome.status}\n{outcome.log[-2000:]}")
    metrics = json.loads((results / name / "metrics.json").read_text())
    return {"metrics": metrics, "wall": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    steps = {label: fresh_process_seconds(code) for label, code in STEPS.items()}
    with tempfile.TemporaryDirectory() as tmp:
        results = Path(tmp)
        runs = {
            "ClientApp process per message": deployed_run(results, "plain", None),
            "site worker per site": deployed_run(
                results, "worker", [results / "site-0.sock", results / "site-1.sock"]
            ),
        }
    rows = table_header(
        "messages handled by",
        "round s (mean)",
        "handler s, slowest client (mean)",
        "rest of the round s",
        "whole run s",
        "Last",
    )
    for label, run in runs.items():
        timings = run["metrics"]["round_timings"]
        round_s = statistics.mean(t["round_seconds"] for t in timings)
        handler = statistics.mean(t["client_seconds_max"] for t in timings)
        rows.append(
            f"| {label} | {round_s:.1f} | {handler:.1f} | {round_s - handler:.1f} | "
            f"{run['wall']:.0f} | {run['metrics']['last']:.2f} |"
        )
    rows += ["", *table_header("a fresh ClientApp process, before any work", "s")]
    rows += [f"| {label} | {seconds:.1f} |" for label, seconds in steps.items()]
    setting = ", ".join(f"{k}={v}" for k, v in RUN.items())
    body = f"{setting}; loopback, TLS, node authentication.\n\n" + "\n".join(rows)
    print(body)
    if not args.no_record:
        record(
            "Deployment overhead per round: process per message vs site worker", body
        )


if __name__ == "__main__":
    main()

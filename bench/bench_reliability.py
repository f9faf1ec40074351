"""Fault campaign: injected faults vs. what the server caught, runs, resumes, data.

Runs the app in-process (the real ServerApp, strategies and ClientApp, no Flower
engine) under every fault kind with ``fault-rate`` for Finetune and DISCO, then
kills runs with SIGKILL at a random checkpoint and resumes them, and prints the
COMPASS-style figures: faults injected, faults caught, runs completed, resumes
exact, data lost.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import record
from fcit_flower import faults
from fcit_flower.checkpoint import CheckpointStore
from fcit_flower.inprocess import run_inprocess, small_run_config

ROOT = Path(__file__).resolve().parents[1]
BUDGET = small_run_config(
    clients=6, per_round=3, train_size=60, test_size=8, num_stages=3
)


def data_lost(run_dir: Path, stages: int) -> list[str]:
    """What a finished run is missing: rows, files, a loadable final checkpoint."""
    problems = []
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError) as error:
        return [f"metrics.json: {error}"]
    if not metrics.get("complete") or len(metrics["accuracy_matrix"]) != stages:
        problems.append("accuracy matrix incomplete")
    if not (run_dir / "accuracy_matrix.csv").exists():
        problems.append("accuracy_matrix.csv missing")
    latest = CheckpointStore(run_dir / "checkpoints").latest()
    if latest is None or not latest.path.name.endswith("-end.npz"):
        problems.append("no final checkpoint")
    return problems


def fault_runs(results: Path, rate: float) -> list[dict]:
    rows = []
    runs = [(m, k) for m in ("finetune", "disco") for k in faults.FAULT_KINDS]
    for fault_seed, (method, kind) in enumerate(runs):
        name = f"{method}-{kind}"
        config = {
            **BUDGET,
            "method": method,
            "fault-rate": rate,
            "fault-kind": kind,
            "fault-seed": fault_seed,  # a different pattern of faulty clients
            "max-round-retries": 3,
            "results-dir": str(results),
            "run-name": name,
        }
        faults.INJECTED.clear()
        started = time.monotonic()
        try:
            run_inprocess(config)
            completed = True
        except RuntimeError as error:
            print(f"{name}: stopped: {error}", file=sys.stderr)
            completed = False
        metrics = json.loads((results / name / "metrics.json").read_text())
        rows.append(
            {
                "run": name,
                "injected": len(faults.INJECTED),
                "caught": len(metrics["rejected_uploads"]),
                "completed": completed,
                "lost": data_lost(results / name, BUDGET["num-stages"]),
                "seconds": round(time.monotonic() - started, 1),
            }
        )
        print(rows[-1], file=sys.stderr)
    return rows


def kill_resume_cycles(results: Path, cycles: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    rows = []
    for cycle in range(cycles):
        method = ("finetune", "disco")[cycle % 2]
        base = {**BUDGET, "method": method, "results-dir": str(results)}
        whole = {**base, "run-name": f"whole-{cycle}"}
        command = [sys.executable, "-m", "fcit_flower.inprocess"]
        subprocess.run(
            [*command, json.dumps(whole)],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        crashed = {**base, "run-name": f"crashed-{cycle}"}
        ckpts = results / f"crashed-{cycle}" / "checkpoints"
        stage = rng.randrange(BUDGET["num-stages"])
        server_round = rng.randrange(1, BUDGET["rounds-per-stage"] + 1)
        pattern = f"ckpt-*-s{stage}-r{server_round}.npz"
        process = subprocess.Popen(
            [*command, json.dumps(crashed)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        while not list(ckpts.glob(pattern)) and process.poll() is None:
            time.sleep(0.02)
        process.kill()
        killed = process.wait() == -9
        subprocess.run(
            [*command, json.dumps({**crashed, "resume": True})],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        a = json.loads((results / whole["run-name"] / "metrics.json").read_text())
        b = json.loads((results / crashed["run-name"] / "metrics.json").read_text())
        ta = CheckpointStore(results / whole["run-name"] / "checkpoints").latest()
        tb = CheckpointStore(ckpts).latest()
        exact = a["accuracy_matrix"] == b["accuracy_matrix"] and all(
            np.array_equal(ta.arrays[k], tb.arrays[k]) for k in ta.arrays
        )
        rows.append(
            {
                "method": method,
                "killed_at": pattern,
                "killed": killed,
                "exact": exact,
                "lost": data_lost(results / crashed["run-name"], BUDGET["num-stages"]),
            }
        )
        print(rows[-1], file=sys.stderr)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=0.3)
    parser.add_argument("--cycles", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = Path(tmp)
        started = time.monotonic()
        runs = fault_runs(results, args.rate)
        cycles = kill_resume_cycles(results, args.cycles, args.seed)
        wall = time.monotonic() - started
    lines = [
        "| run | faults injected | faults caught | completed | data lost | s |",
        "|---|---|---|---|---|---|",
    ]
    for row in runs:
        lines.append(
            f"| {row['run']} | {row['injected']} | {row['caught']} | "
            f"{row['completed']} | {', '.join(row['lost']) or 'none'} | "
            f"{row['seconds']} |"
        )
    injected = sum(r["injected"] for r in runs)
    caught = sum(r["caught"] for r in runs)
    done = sum(r["completed"] for r in runs)
    exact = sum(c["exact"] and c["killed"] for c in cycles)
    lost = sum(bool(r["lost"]) for r in runs) + sum(bool(c["lost"]) for c in cycles)
    summary = (
        f"\nTotals: faults injected {injected}, caught {caught}; runs completed "
        f"{done}/{len(runs)}; SIGKILL + resume cycles exact {exact}/{len(cycles)} "
        f"(killed at {', '.join(c['killed_at'] for c in cycles)}); runs with data "
        f"lost {lost}. Budget {BUDGET}, fault-rate {args.rate}, "
        f"max-round-retries 3; wall {wall:.0f} s."
    )
    body = "\n".join(lines) + "\n" + summary
    print(body)
    record("Reliability campaign (in-process, injected faults, SIGKILL + resume)", body)


if __name__ == "__main__":
    main()

"""Same code, same numbers? Seed-0 runs of every method, fingerprinted for comparison.

A refactoring must not change results. ``run`` executes each variant with the
in-process runner (``fcit_flower.inprocess.run_inprocess``, which exists at every
commit since the in-process grid) and writes, per variant, the accuracy matrix,
Last/Avg/BWT and a SHA-256 of the final global arrays (the ``global/`` arrays of the
last checkpoint) to a JSON file. ``compare`` tabulates two such files. Run it at two
commits (the older one from an exported tree, ``PYTHONPATH`` pointing at it):

    git archive OLD | tar -x -C /tmp/old
    (cd /tmp/old && python -m bench.bench_identity run /tmp/old.json)
    python -m bench.bench_identity run /tmp/new.json
    python -m bench.bench_identity compare /tmp/old.json /tmp/new.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

METHODS = ("zeroshot", "finetune", "disco", "ewc", "olora", "mlora", "moelora", "mtl")
# Stateful server optimizers; ``server-optimizer-state`` exists only after the
# method-table redesign, so these rows pass it only where the run accepts it.
OPTIMIZER_ROWS: list[tuple[str, dict[str, Any]]] = [
    (
        f"{method} {name}",
        {"method": method, "server-optimizer": name, "server-lr": 0.01},
    )
    for method in ("finetune", "disco")
    for name in ("fedadam", "fedyogi")
]


def variants(with_optimizers: bool) -> list[tuple[str, dict[str, Any]]]:
    """Every method at the run-config defaults (and optionally the optimizer rows)."""
    rows = [(m, {"method": m}) for m in METHODS]
    return rows + (OPTIMIZER_ROWS if with_optimizers else [])


def global_fingerprint(run_dir: Path) -> str:
    """SHA-256 over the sorted ``global/`` arrays of the newest checkpoint."""
    files = sorted((run_dir / "checkpoints").glob("ckpt-*.npz"))
    digest = hashlib.sha256()
    with np.load(files[-1]) as data:
        for key in sorted(k for k in data.files if k.startswith("global/")):
            value = np.ascontiguousarray(data[key])
            digest.update(key.encode())
            digest.update(str(value.dtype).encode())
            digest.update(value.tobytes())
    return digest.hexdigest()


def run_variant(values: dict[str, Any], results: Path, name: str) -> dict[str, Any]:
    """One in-process run in a fresh interpreter (no cache shared between runs)."""
    config = {**values, "results-dir": str(results), "run-name": name}
    started = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "fcit_flower.inprocess", json.dumps(config)],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    metrics = json.loads((results / name / "metrics.json").read_text())
    return {
        "config": values,
        "accuracy_matrix": metrics["accuracy_matrix"],
        "last": metrics["last"],
        "avg": metrics["avg"],
        "bwt": metrics["bwt"],
        "global_sha256": global_fingerprint(results / name),
        "wall_seconds": round(time.monotonic() - started, 1),
    }


def commit() -> str:
    """The git commit of the tree this runs from (or ``unknown``)."""
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run(out: Path, only: list[str], extra: dict[str, Any], optimizers: bool) -> None:
    """Run the variants and write their fingerprints to ``out`` (after each one)."""
    found: dict[str, Any] = {"commit": commit(), "variants": {}}
    if out.exists():
        found = json.loads(out.read_text())
    with tempfile.TemporaryDirectory() as tmp:
        for index, (label, values) in enumerate(variants(optimizers)):
            if (only and label not in only) or label in found["variants"]:
                continue
            row = run_variant({**values, **extra}, Path(tmp), f"v{index}")
            found["variants"][label] = row
            out.write_text(json.dumps(found, indent=1))
            print(f"{label}: Last {row['last']:.2f} ({row['wall_seconds']} s)")


def compare(before: Path, after: Path) -> str:
    """Markdown table: per variant, whether matrices and arrays are identical."""
    a, b = json.loads(before.read_text()), json.loads(after.read_text())
    lines = [
        f"before: {a.get('commit', '?')}, after: {b.get('commit', '?')}",
        "",
        "| variant | matrix identical | global arrays identical | Last before/after |",
        "|---|---|---|---|",
    ]
    for label, old in a["variants"].items():
        new = b["variants"].get(label)
        if new is None:
            continue
        matrix = old["accuracy_matrix"] == new["accuracy_matrix"]
        arrays = old["global_sha256"] == new["global_sha256"]
        lines.append(
            f"| {label} | {'yes' if matrix else 'no'} | {'yes' if arrays else 'no'} "
            f"| {old['last']:.2f} / {new['last']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    runner = sub.add_parser("run", help="run the variants, write their fingerprints")
    runner.add_argument("out", type=Path)
    runner.add_argument("--only", default="", help="comma-separated variant labels")
    runner.add_argument("--optimizers", action="store_true", help="add FedAdam/Yogi")
    runner.add_argument("--run-config", default="{}", help="JSON overrides for all")
    both = sub.add_parser("compare", help="tabulate two fingerprint files")
    both.add_argument("before", type=Path)
    both.add_argument("after", type=Path)
    args = parser.parse_args()
    if args.command == "run":
        only = [s for s in args.only.split(",") if s]
        run(args.out, only, json.loads(args.run_config), args.optimizers)
    else:
        print(compare(args.before, args.after))


if __name__ == "__main__":
    main()

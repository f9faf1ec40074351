"""Hyper-parameter choices of mini-FCIT made on its validation split, never on test.

Every run here uses ``eval-split=val``: val items come from the same held-out
images and phrasings as test items but are disjoint from both train and test.
Runs go through the real ServerApp and ClientApp in one process
(:func:`bench.common.run_inprocess`); Hom, task setting, beta 1, seed 0.

Parts (``--part``):

``budget``
    Finetune's local learning rate and local epochs. Criterion: the mean val score
    of each task right after its own stage (can the federation learn a task at
    all?), not Last or Avg and not any other method's score; ties go to the
    smaller budget. The chosen pair becomes the default for every method.
``scaling``
    DISCO's ``subspace-scaling`` ("total": the authors' alpha / lora-rank for
    every subspace; "rank": LoRA's alpha / rank per subspace), measured by the same
    plasticity criterion beside Finetune's.
``mtl``
    Epochs of the centralized multi-task upper bound: the val Last of each.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import (
    diagonal,
    mean,
    parse_overrides,
    record_rows,
    run_inprocess,
    table_header,
)
from fcit_flower.models.tiny_spec import TINY_BASE_ENV
from fcit_flower.tasks.mini_fcit import VERSION

BASE: dict[str, Any] = {"eval-split": "val", "seed": 0}
BUDGETS = [
    {"lr": lr, "local-epochs": epochs} for epochs in (1, 3) for lr in (1e-3, 3e-3, 1e-2)
]
SCALINGS = [
    {"method": "finetune"},
    {"method": "disco", "subspace-scaling": "total"},
    {"method": "disco", "subspace-scaling": "rank"},
]


def _label(values: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in values.items())


def _rows(variants: list[dict[str, Any]], common: dict[str, Any]) -> list[str]:
    rows = table_header(
        "variant", "after own stage (val)", "Last (val)", "Avg (val)", "wall s"
    )
    per_task: list[str] = []  # each variant's final val score per task
    with tempfile.TemporaryDirectory() as tmp:
        for index, values in enumerate(variants):
            start = time.monotonic()
            metrics = run_inprocess(
                {**BASE, **common, **values}, Path(tmp), f"v{index}"
            )
            rows.append(
                f"| {_label(values)} | {mean(diagonal(metrics)):.2f} | "
                f"{metrics['last']:.2f} | {metrics['avg']:.2f} | "
                f"{time.monotonic() - start:.0f} |"
            )
            print(rows[-1], flush=True)
            if not per_task:
                per_task = ["", *table_header("variant", *metrics["tasks"])]
            last = metrics["accuracy_matrix"][-1]
            per_task.append(
                f"| {_label(values)} | " + " | ".join(f"{v:.1f}" for v in last) + " |"
            )
    return rows + per_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--part", choices=("budget", "scaling", "mtl"), required=True)
    parser.add_argument(
        "--run-config", default="", help="extra key=value overrides for every run"
    )
    parser.add_argument(
        "--local-epochs",
        default="1,3",
        help="budget part: the local-epoch values to try (comma-separated)",
    )
    parser.add_argument(
        "--mtl-epochs",
        default="2,3,4,5",
        help="mtl part: the epoch counts to try (comma-separated)",
    )
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    common = parse_overrides(args.run_config)
    if args.part == "budget":
        epochs = {int(e) for e in args.local_epochs.split(",")}
        budgets = [b for b in BUDGETS if b["local-epochs"] in epochs]
        rows = _rows([{"method": "finetune", **b} for b in budgets], common)
    elif args.part == "scaling":
        rows = _rows(SCALINGS, common)
    else:
        wanted = sorted({int(e) for e in args.mtl_epochs.split(",")})
        rows = _rows([{"method": "mtl", "mtl-epochs": e} for e in wanted], common)
    base = os.environ.get(TINY_BASE_ENV, "standard")  # from $FCIT_TINY_BASE
    seed = common.get("seed", BASE["seed"])
    split = f"mini-FCIT {VERSION} val split, seed {seed}, {base} base"
    title = f"Validation choice: {args.part} ({split})"
    record_rows(title, rows, enabled=not args.no_record)


if __name__ == "__main__":
    main()

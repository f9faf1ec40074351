"""DISCO ablations and variants on mini-FCIT (Hom, task setting, beta = 1, seed 0).

Runs the real ServerApp and ClientApp in one process
(:func:`bench.common.run_inprocess`); runs already made by ``bench.bench_mini_fcit``
with the same config are reused. Rows: the subspace scale, SSA modes,
identity-token sources, server optimizers, Het scenario, capability setting, the
reference configuration (projector trained at lr / 10) and one round per stage,
each for DISCO and, where it applies to both, for Finetune.

Columns: Last / Avg / BWT on test; "own stage": the mean test score of each task
right after its own stage (plasticity); DISCO's test-time routing accuracy on
held-out phrasings (share of items whose most-activated subspace is their task's).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from bench.common import (
    diagonal,
    mean,
    record_rows,
    run_cached,
    run_name,
    table_header,
)
from fcit_flower.tasks.mini_fcit import VERSION

VARIANTS: list[tuple[str, dict[str, Any]]] = [
    ("finetune", {"method": "finetune"}),
    ("disco", {"method": "disco"}),
    ("disco subspace-scaling=total (authors')", {"subspace-scaling": "total"}),
    ("disco ssa-mode=concat", {"ssa-mode": "concat"}),
    ("disco ssa-mode=cosine", {"ssa-mode": "cosine"}),
    ("disco ssa-mode=argmax", {"ssa-mode": "argmax"}),
    ("disco token-source=image", {"token-source": "image"}),
    ("disco token-source=text+image", {"token-source": "text+image"}),
    (
        "disco server-optimizer=fedadam (lr 0.01)",
        {"server-optimizer": "fedadam", "server-lr": 0.01},
    ),
    (
        "finetune server-optimizer=fedadam (lr 0.01)",
        {"method": "finetune", "server-optimizer": "fedadam", "server-lr": 0.01},
    ),
    ("finetune scenario=het", {"method": "finetune", "scenario": "het"}),
    ("disco scenario=het", {"scenario": "het"}),
    ("finetune setting=capability", {"method": "finetune", "setting": "capability"}),
    ("disco setting=capability", {"setting": "capability"}),
    ("finetune train-projector=true", {"method": "finetune", "train-projector": True}),
    ("disco train-projector=true", {"train-projector": True}),
    ("finetune rounds-per-stage=1", {"method": "finetune", "rounds-per-stage": 1}),
    ("disco rounds-per-stage=1", {"rounds-per-stage": 1}),
]

TITLE = f"Ablations and variants (mini-FCIT {VERSION}, Hom, beta 1, seed 0, test split)"


def _cell(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _heldout_routing(run_dir: Path) -> str:
    path = run_dir / "routing.json"
    if not path.exists():
        return "-"
    routing = json.loads(path.read_text()).get("test_routing_accuracy", {})
    values = [v["heldout"] for v in routing.values() if "heldout" in v]
    return f"{100 * mean(values):.1f}" if values else "-"


def _row(label: str, metrics: dict[str, Any], run_dir: Path) -> str:
    cells = [_cell(metrics[key]) for key in ("last", "avg", "bwt")]
    cells += [f"{mean(diagonal(metrics)):.2f}", _heldout_routing(run_dir)]
    return f"| {label} | {' | '.join(cells)} | {metrics['wall_seconds']:.0f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", default="", help="comma-separated row numbers")
    parser.add_argument("--results-dir", default="results/bench-mini-fcit")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    chosen = {int(i) for i in args.only.split(",") if i} or set(range(len(VARIANTS)))
    results = Path(args.results_dir)
    rows = table_header(
        "variant", "Last", "Avg", "BWT", "own stage", "routing (held-out)", "wall s"
    )
    for index, (label, overrides) in enumerate(VARIANTS):
        if index not in chosen:
            continue
        values = {"method": "disco", "seed": 0, **overrides}
        rows.append(
            _row(label, run_cached(values, results), results / run_name(values))
        )
        print(rows[-1], flush=True)
    record_rows(TITLE, rows, enabled=not args.no_record)


if __name__ == "__main__":
    main()

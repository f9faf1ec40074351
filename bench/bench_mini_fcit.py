"""mini-FCIT comparison tables: methods x seeds, per-task detail, DISCO routing.

Runs the real ServerApp and ClientApp in one process
(:func:`bench.common.run_inprocess`; the same numbers as ``fcit-flower compare``,
which goes through ``flwr run``) and writes three tables:

1. Last / Avg / BWT / strict Last / headroom per method (mean ± sample std over
   seeds; :func:`fcit_flower.report.comparison.compare_table`);
2. per task: chance, majority class, zero-shot, MTL, and each method's score right
   after the task's own stage and at the end (seed means);
3. DISCO's test-time routing accuracy per task: the share of test items whose
   most-activated subspace (SSA) belongs to the item's task, on instructions
   phrased as in training and on held-out phrasings.

Finished runs are kept under ``--results-dir`` and reused when their config is the
same, so a table can be extended (more seeds, more methods) without recomputing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from bench.common import (
    diagonal,
    mean,
    parse_overrides,
    record,
    run_cached,
    run_name,
    table_header,
)
from fcit_flower.config import RunConfig
from fcit_flower.report.comparison import DEFINITIONS, compare_table, run_summary
from fcit_flower.tasks.data import data_root
from fcit_flower.tasks.mini_fcit import VERSION

METHODS = "zeroshot,finetune,ewc,olora,mlora,moelora,disco,mtl"


def _stats(data_root: Path) -> dict[str, Any]:
    return dict(json.loads((data_root / "stats.json").read_text()))


def per_task_table(
    runs: dict[str, list[dict[str, Any]]], stats: dict[str, Any]
) -> list[str]:
    """Table 2: per-task references and each method's own-stage and final scores."""
    first = next(iter(runs.values()))[0]
    tasks = first["tasks"]
    learners = [m for m in runs if m not in ("zeroshot", "mtl")]
    columns = ["task", "chance", "majority", "zero-shot", "MTL"]
    columns += [f"{m} own/last" for m in learners]
    rows = table_header(*columns)

    def final(method: str, index: int) -> float:
        return mean([r["accuracy_matrix"][-1][index] for r in runs[method]])

    for index, task in enumerate(tasks):
        cells = [task, f"{stats[task]['chance']:.1f}", f"{stats[task]['majority']:.1f}"]
        for ref in ("zeroshot", "mtl"):
            cells.append(f"{final(ref, index):.1f}" if ref in runs else "-")
        for method in learners:
            own = mean([diagonal(r)[index] for r in runs[method]])
            cells.append(f"{own:.1f} / {final(method, index):.1f}")
        rows.append("| " + " | ".join(cells) + " |")
    means = ["mean", "", "", *[""] * 2]
    for ref_index, ref in enumerate(("zeroshot", "mtl")):
        if ref in runs:
            means[3 + ref_index] = f"{mean([r['last'] for r in runs[ref]]):.1f}"
    for method in learners:
        own = mean([mean(diagonal(r)) for r in runs[method]])
        means.append(f"{own:.1f} / {mean([r['last'] for r in runs[method]]):.1f}")
    rows.append("| " + " | ".join(means) + " |")
    return rows


def routing_table(routings: list[dict[str, Any]]) -> list[str]:
    """Table 3: DISCO's test-time routing accuracy per task and phrasing."""
    rows = table_header("task", "all items", "train phrasings", "held-out phrasings")
    tasks = routings[0].get("test_routing_accuracy", {})
    for task in tasks:
        cells = [task]
        for kind in ("all", "train", "heldout"):
            values = [r["test_routing_accuracy"][task].get(kind) for r in routings]
            defined = [100 * v for v in values if v is not None]
            cells.append(f"{mean(defined):.1f}" if defined else "-")
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add = parser.add_argument
    add("--methods", default=METHODS)
    add("--seeds", default="0,1,2")
    # Methods run on the first seed only, to save time (the seeds column says so).
    add("--first-seed-only", default="", help="comma-separated methods")
    add("--run-config", default="", help="key=value overrides")
    add("--results-dir", default="results/bench-mini-fcit")
    add("--title", default=f"mini-FCIT {VERSION} comparison")
    add("--no-record", action="store_true")
    args = parser.parse_args()
    common = parse_overrides(args.run_config)
    results = Path(args.results_dir)
    runs: dict[str, list[dict[str, Any]]] = {}
    routings: list[dict[str, Any]] = []
    for method in args.methods.split(","):
        seeds = [int(s) for s in args.seeds.split(",")]
        if method in args.first_seed_only.split(","):
            seeds = seeds[:1]
        for seed in seeds:
            values = {"method": method, "seed": seed, **common}
            name = run_name(values)
            metrics = run_cached(values, results)
            runs.setdefault(method, []).append(metrics)
            summary = run_summary(metrics)
            print(method, seed, {k: v for k, v in summary.items()}, flush=True)
            routing = results / name / "routing.json"
            if method == "disco" and routing.exists():
                routings.append(json.loads(routing.read_text()))
    table = {
        method: {
            key: [run_summary(m)[key] for m in metrics]
            for key in ("last", "avg", "bwt", "strict_last")
        }
        for method, metrics in runs.items()
    }
    markdown, _ = compare_table(table)
    config = RunConfig.from_mapping(next(iter(runs.values()))[0]["config"])
    sections = [markdown, "\n".join(per_task_table(runs, _stats(data_root(config))))]
    if routings:
        sections.append("\n".join(routing_table(routings)))
    sections.append("\n".join(f"- {line}" for line in DEFINITIONS))
    body = "\n\n".join(sections)
    print(body)
    if not args.no_record:
        record(args.title, body)


if __name__ == "__main__":
    main()

"""The report of one run: ``report.md`` / ``report.html`` with its plots.

Inputs are the run directory's files only (``metrics.json`` required;
``manifest.json``, ``routing.json`` (DISCO) and ``partitions.json`` if present), so a
report can be (re)built for any finished or partial run.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from fcit_flower.report import plots
from fcit_flower.report.document import (
    PLOTS_DIR,
    Report,
    ReportError,
    fmt,
    read_json_object,
)
from fcit_flower.tasks.catalog import get_task

# One line per figure a run report shows (the comparison report adds its own).
RUN_DEFINITIONS = [
    "Last: mean score over all tasks after the final stage.",
    "Avg: mean over stages of the mean score on the tasks seen so far.",
    "BWT: mean change of each task's score from right after its stage to the end "
    "(negative = forgetting; n/a when no task finished before the last stage).",
]
STAND_IN_NOTE = (
    "mini-FCIT: each task is a scaled-down stand-in (32 x 32 drawings, a few "
    "hundred items) named after the FCIT dataset it imitates, not that dataset; "
    "its scores are not comparable with the paper's."
)
# Matrix scores that are not accuracy in percent.
METRIC_NAMES = {"rouge-l": "ROUGE-L", "cider": "CIDEr-D", "bleu-4": "BLEU-4"}


def metric_label(task: str) -> str:
    """``task (accuracy %)``, ``flickr30k (ROUGE-L)``; the bare name if unknown."""
    try:
        metric = get_task(task).metric
    except ValueError:  # a user's dataset: its task.json is not at hand here
        return task
    return f"{task} ({METRIC_NAMES.get(metric, 'accuracy %')})"


def is_mini_fcit(config: Any) -> bool:
    """Whether a run's config used the embedded mini-FCIT (no ``data-root``)."""
    return isinstance(config, dict) and not config.get("data-root")


def checked_metrics(path: Path) -> dict[str, Any]:
    """A run's ``metrics.json``, checked: task names and a rectangular matrix.

    Raises
    ------
    ReportError
        When the file is absent, not a JSON object, or its ``tasks`` and
        ``accuracy_matrix`` do not match (the message names the file and field).
    """
    metrics = read_json_object(path)
    if metrics is None:
        raise ReportError(f"{path.parent}: no metrics.json (not a run directory)")
    tasks, matrix = metrics.get("tasks"), metrics.get("accuracy_matrix")
    if not isinstance(tasks, list) or not all(isinstance(t, str) for t in tasks):
        raise ReportError(f"{path}: field 'tasks' is not a list of task names")
    if not isinstance(matrix, list):
        raise ReportError(f"{path}: field 'accuracy_matrix' is not a list of rows")
    for number, row in enumerate(matrix, start=1):
        if not isinstance(row, list) or len(row) != len(tasks):
            raise ReportError(
                f"{path}: 'accuracy_matrix' row {number} is not a list of "
                f"{len(tasks)} scores (one per task)"
            )
        if not all(_is_score(v) for v in row):
            raise ReportError(
                f"{path}: 'accuracy_matrix' row {number} holds a non-number"
            )
    return metrics


def _is_score(value: Any) -> bool:
    return value is None or (
        isinstance(value, int | float) and not isinstance(value, bool)
    )


def _run_plots(run_dir: Path, metrics: dict, routing: dict | None) -> list[Path]:
    out_dir = run_dir / PLOTS_DIR
    name = run_dir.name
    tasks, matrix = metrics["tasks"], metrics["accuracy_matrix"]
    paths = []
    if matrix:
        paths.append(
            plots.accuracy_heatmap(
                out_dir / "accuracy_matrix.png", tasks, matrix, f"{name}: accuracy"
            )
        )
        learned = dict(zip(tasks, metrics.get("learned_at_stage") or [], strict=False))
        paths.append(
            plots.forgetting_curves(
                out_dir / "forgetting.png", tasks, matrix, learned, f"{name}: per task"
            )
        )
    if routing:
        activation = routing.get("mean_ssa_activation") or {}
        if activation:
            paths.append(
                plots.ssa_heatmap(
                    out_dir / "ssa_activation.png",
                    activation,
                    f"{name}: mean SSA weight (last evaluation)",
                )
            )
        tokens = routing.get("slot_tokens") or []
        if tokens:
            majority = routing.get("slot_majority_task", {})
            labels = [f"{k}: {majority.get(str(k), '?')}" for k in range(len(tokens))]
            paths.append(
                plots.token_similarity(
                    out_dir / "token_similarity.png",
                    tokens,
                    labels,
                    f"{name}: subspace identity tokens",
                )
            )
    return paths


_PLOT_CAPTIONS = {
    "accuracy_matrix.png": "Accuracy matrix: score of each test task after each stage",
    "forgetting.png": "Per-task scores over the stages (forgetting curves)",
    "ssa_activation.png": "Mean Subspace Selective Activation weight per test task",
    "token_similarity.png": "Cosine similarity of the subspaces' identity tokens",
}


def write_run_report(run_dir: Path) -> Path:
    """Write the plots, ``report.md`` and ``report.html`` of one run directory.

    Parameters
    ----------
    run_dir : Path
        A directory holding ``metrics.json``.

    Returns
    -------
    Path
        The ``report.md`` written.

    Raises
    ------
    ReportError
        When ``run_dir`` has no (valid) ``metrics.json``.
    """
    run_dir = Path(run_dir)
    started = time.perf_counter()
    metrics = checked_metrics(run_dir / "metrics.json")
    routing = read_json_object(run_dir / "routing.json")
    manifest = read_json_object(run_dir / "manifest.json")
    partition = read_json_object(run_dir / "partitions.json")
    images = _run_plots(run_dir, metrics, routing)

    report = Report(run_dir)
    report.heading(f"FCIT run {run_dir.name}", 1)
    state = "complete" if metrics.get("complete") else "PARTIAL (not every stage ran)"
    report.text(
        f"Method {metrics.get('method', '?')}; {len(metrics['accuracy_matrix'])} "
        f"stage(s) evaluated; {state}."
    )
    report.heading("Summary")
    report.table(
        ["Last", "Avg", "BWT"],
        [[fmt(metrics.get(k)) for k in ("last", "avg", "bwt")]],
    )
    config = (manifest or {}).get("config") or metrics.get("config")
    report.items(RUN_DEFINITIONS + ([STAND_IN_NOTE] if is_mini_fcit(config) else []))
    report.heading("Score matrix")
    report.text("Each task's test score (column) after each stage (row).")
    report.table(
        ["after stage", *(metric_label(t) for t in metrics["tasks"])],
        [
            [s, *(fmt(v) for v in row)]
            for s, row in enumerate(metrics["accuracy_matrix"], 1)
        ],
    )
    report.heading("Plots")
    for path in images:
        report.image(path, _PLOT_CAPTIONS.get(path.name, path.stem))
    if routing:
        _routing_section(report, routing)
    if partition:
        _partition_section(report, partition)
    _times_section(report, metrics)
    _examples_section(report, metrics.get("examples") or {})
    _config_section(report, config)
    _environment_section(report, manifest)
    report.text(f"Report written in {time.perf_counter() - started:.2f} s.")
    return report.write(f"FCIT run {run_dir.name}")


def _routing_section(report: Report, routing: dict) -> None:
    report.heading("Routing diagnostics (DISCO)")
    accuracy = routing.get("routing_accuracy")
    split = routing.get("tasks_split_over_slots") or {}
    assignments = routing.get("assignments") or []
    report.items(
        [
            f"routing accuracy (client's slot is its task's majority slot): "
            f"{fmt(accuracy)}",
            f"assignments: {len(assignments)}; subspaces used: "
            f"{len(routing.get('slot_majority_task') or {})}",
            "tasks split over several subspaces: "
            + (", ".join(f"{t} -> {s}" for t, s in split.items()) or "none"),
        ]
    )
    majority = routing.get("slot_majority_task") or {}
    if majority:
        report.table(["subspace", "majority task"], sorted(majority.items()))


def _partition_section(report: Report, partition: Any) -> None:
    report.heading("Partition statistics")
    stages = partition.get("stages") if isinstance(partition, dict) else None
    if not isinstance(stages, list):
        report.code(json.dumps(partition, indent=1))
        return
    rows = []
    for stage in stages:
        sizes = [float(c.get("samples", 0)) for c in stage.get("clients", [])]
        if sizes:
            rows.append(
                [
                    stage.get("stage", "?"),
                    len(sizes),
                    int(min(sizes)),
                    int(max(sizes)),
                    f"{sum(sizes) / len(sizes):.1f}",
                    fmt(stage.get("size_gini")),
                ]
            )
    report.table(["stage", "clients", "min", "max", "mean", "size Gini"], rows)


def _times_section(report: Report, metrics: dict) -> None:
    report.heading("Wall times")
    lines = [f"ServerApp wall time: {fmt(metrics.get('wall_seconds'))} s"]
    if "flower_wall_seconds" in metrics:
        lines.append(f"flwr run wall time: {fmt(metrics['flower_wall_seconds'])} s")
    stages = metrics.get("stage_seconds") or []
    if stages:
        lines.append("per stage (s): " + ", ".join(fmt(s) for s in stages))
    rejected = metrics.get("rejected_uploads")
    if rejected:
        lines.append(f"rejected uploads: {len(rejected)}")
    report.items(lines)


def _examples_section(report: Report, examples: dict) -> None:
    rows = [
        [task, *example]
        for task, triples in examples.items()
        for example in triples[:2]
    ]
    if rows:
        report.heading("Example predictions (last evaluation)")
        report.table(["task", "question", "prediction", "answer"], rows)


def _config_section(report: Report, config: dict | None) -> None:
    if config:
        report.heading("Configuration")
        report.table(["key", "value"], [[k, v] for k, v in config.items()])


def _environment_section(report: Report, manifest: dict | None) -> None:
    report.heading("Environment")
    if not manifest:
        report.text("No manifest.json in this run directory.")
        return
    versions = manifest.get("versions") or {}
    device = manifest.get("device") or {}
    report.table(
        ["what", "value"],
        [
            *[[k, v] for k, v in versions.items()],
            ["git commit", manifest.get("git_commit")],
            *[[k, v] for k, v in device.items()],
            ["seeds", manifest.get("seeds")],
            ["data root", manifest.get("data_root")],
        ],
    )

"""``report.md`` and a self-contained ``report.html`` for a run or a comparison.

A report is a list of blocks (heading, paragraph, table, image, list, code) rendered
twice: to Markdown with relative image links, and to HTML with the images embedded
as base64 PNGs (one file that opens anywhere). The inputs are the run directory's
files only, so a report can be (re)built for any finished or partial run:

- run: ``metrics.json`` (required), ``manifest.json``, ``routing.json`` (DISCO),
  ``partitions.json`` (if present);
- comparison: ``compare.csv`` and the run directories beside it.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fcit_flower.report import plots
from fcit_flower.report.manifest import manifest_differences
from fcit_flower.results import atomic_write_text

PLOTS_DIR = "plots"


class ReportError(ValueError):
    """A directory cannot be reported on (no results in it)."""


@dataclass(frozen=True)
class Link:
    """A table cell linking to another report (``.md``; ``.html`` in HTML)."""

    text: str
    target: str


@dataclass
class Report:
    """Blocks of a report; ``base`` is the directory image paths are relative to."""

    base: Path
    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> None:
        """Add a heading."""
        self.blocks.append(("heading", (level, text)))

    def text(self, text: str) -> None:
        """Add a paragraph (plain text, no markup)."""
        self.blocks.append(("text", text))

    def table(self, header: Sequence[Any], rows: Sequence[Sequence[Any]]) -> None:
        """Add a table."""
        self.blocks.append(("table", ([str(h) for h in header], rows)))

    def image(self, path: Path, alt: str) -> None:
        """Add a PNG (a file under ``base``)."""
        self.blocks.append(("image", (path, alt)))

    def items(self, lines: Sequence[str]) -> None:
        """Add a bullet list."""
        self.blocks.append(("items", list(lines)))

    def code(self, text: str) -> None:
        """Add preformatted text."""
        self.blocks.append(("code", text))

    def markdown(self) -> str:
        """The report as Markdown; images are links relative to ``base``."""
        out = []
        for kind, value in self.blocks:
            if kind == "heading":
                out.append(f"{'#' * value[0]} {value[1]}")
            elif kind == "text":
                out.append(value)
            elif kind == "table":
                header, rows = value
                lines = [
                    "| " + " | ".join(_md_cell(h) for h in header) + " |",
                    "|" + "---|" * len(header),
                ]
                lines += [
                    "| " + " | ".join(_md_cell(c) for c in r) + " |" for r in rows
                ]
                out.append("\n".join(lines))
            elif kind == "image":
                path, alt = value
                out.append(f"![{alt}]({path.relative_to(self.base).as_posix()})")
            elif kind == "items":
                out.append("\n".join(f"- {line}" for line in value))
            elif kind == "code":
                out.append(f"```\n{value}\n```")
        return "\n\n".join(out) + "\n"

    def html(self, title: str) -> str:
        """The report as one HTML page with the images embedded (base64 PNG)."""
        body = []
        for kind, value in self.blocks:
            if kind == "heading":
                body.append(f"<h{value[0]}>{html.escape(value[1])}</h{value[0]}>")
            elif kind == "text":
                body.append(f"<p>{html.escape(value)}</p>")
            elif kind == "table":
                header, rows = value
                head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
                cells = "".join(
                    "<tr>" + "".join(f"<td>{_html_cell(c)}</td>" for c in r) + "</tr>"
                    for r in rows
                )
                body.append(f"<table><tr>{head}</tr>{cells}</table>")
            elif kind == "image":
                path, alt = value
                data = base64.b64encode(path.read_bytes()).decode("ascii")
                body.append(
                    f'<figure><img alt="{html.escape(alt)}" '
                    f'src="data:image/png;base64,{data}">'
                    f"<figcaption>{html.escape(alt)}</figcaption></figure>"
                )
            elif kind == "items":
                lis = "".join(f"<li>{html.escape(line)}</li>" for line in value)
                body.append(f"<ul>{lis}</ul>")
            elif kind == "code":
                body.append(f"<pre>{html.escape(value)}</pre>")
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>"
            "<body>\n" + "\n".join(body) + "\n</body></html>\n"
        )

    def write(self, title: str) -> Path:
        """Write ``report.md`` and ``report.html`` into ``base``; return the .md."""
        atomic_write_text(self.base / "report.html", self.html(title))
        path = self.base / "report.md"
        atomic_write_text(path, self.markdown())
        return path


_CSS = (
    "body{font-family:sans-serif;max-width:70em;margin:2em auto;padding:0 1em}"
    "table{border-collapse:collapse;margin:1em 0}"
    "td,th{border:1px solid #bbb;padding:2px 8px;text-align:left}"
    "img{max-width:100%}pre{background:#f4f4f4;padding:.5em;overflow:auto}"
)


def _md_cell(value: Any) -> str:
    if isinstance(value, Link):
        return f"[{value.text}]({value.target})"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _html_cell(value: Any) -> str:
    if isinstance(value, Link):
        target = value.target.removesuffix(".md") + ".html"
        return f'<a href="{html.escape(target)}">{html.escape(value.text)}</a>'
    return html.escape(str(value))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as error:
        raise ReportError(f"{path}: not valid JSON ({error})") from None


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    return "n/a" if value is None else str(value)


# --------------------------------------------------------------------------- runs


def write_run_plots(run_dir: Path) -> list[Path]:
    """Write the run's plots into ``run_dir/plots``; return their paths.

    Raises
    ------
    ReportError
        When ``run_dir`` has no ``metrics.json``.
    """
    metrics = _read_json(run_dir / "metrics.json")
    if metrics is None:
        raise ReportError(f"{run_dir}: no metrics.json (not a run directory)")
    routing = _read_json(run_dir / "routing.json")
    return _run_plots(run_dir, metrics, routing)


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
    metrics = _read_json(run_dir / "metrics.json")
    if metrics is None:
        raise ReportError(f"{run_dir}: no metrics.json (not a run directory)")
    routing = _read_json(run_dir / "routing.json")
    manifest = _read_json(run_dir / "manifest.json")
    partition = _read_json(run_dir / "partitions.json")
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
        [[_fmt(metrics.get(k)) for k in ("last", "avg", "bwt")]],
    )
    report.heading("Accuracy matrix")
    report.table(
        ["after stage", *metrics["tasks"]],
        [
            [s, *(_fmt(v) for v in row)]
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
    _config_section(report, (manifest or {}).get("config") or metrics.get("config"))
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
            f"{_fmt(accuracy)}",
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
                    stage.get("size_gini", ""),
                ]
            )
    report.table(["stage", "clients", "min", "max", "mean", "size Gini"], rows)


def _times_section(report: Report, metrics: dict) -> None:
    report.heading("Wall times")
    lines = [f"ServerApp wall time: {_fmt(metrics.get('wall_seconds'))} s"]
    if "flower_wall_seconds" in metrics:
        lines.append(f"flwr run wall time: {_fmt(metrics['flower_wall_seconds'])} s")
    stages = metrics.get("stage_seconds") or []
    if stages:
        lines.append("per stage (s): " + ", ".join(_fmt(s) for s in stages))
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


# --------------------------------------------------------------------- comparisons


def _compare_rows(combo_dir: Path) -> list[dict[str, str]]:
    path = combo_dir / "compare.csv"
    try:
        with open(path, newline="") as handle:
            return list(csv.DictReader(handle))
    except FileNotFoundError:
        raise ReportError(f"{combo_dir}: no compare.csv") from None


def write_compare_report(combo_dir: Path) -> Path:
    """Write the comparison's bar chart, ``report.md`` and ``report.html``.

    Also (re)writes the report of every run directory found in ``combo_dir`` and
    warns when those runs differ in data or config beyond method and seed.

    Parameters
    ----------
    combo_dir : Path
        A directory holding ``compare.csv`` and the run directories.

    Returns
    -------
    Path
        The ``report.md`` written.
    """
    combo_dir = Path(combo_dir)
    started = time.perf_counter()
    rows = _compare_rows(combo_dir)
    run_dirs = sorted(p.parent for p in combo_dir.glob("*/metrics.json"))
    run_reports = [write_run_report(d) for d in run_dirs]
    methods = [r["method"] for r in rows]
    chart = plots.compare_bars(
        combo_dir / PLOTS_DIR / "compare.png",
        methods,
        {m: [float(r[f"{m.lower()}_mean"]) for r in rows] for m in ("Last", "Avg")},
        {m: [float(r[f"{m.lower()}_std"]) for r in rows] for m in ("Last", "Avg")},
        f"{combo_dir.name}: Last / Avg (mean ± std over seeds)",
    )
    report = Report(combo_dir)
    report.heading(f"FCIT comparison {combo_dir.name}", 1)
    report.table(
        ["Method", "Last", "Avg", "BWT", "seeds"],
        [
            [
                r["method"],
                *(
                    f"{r[f'{k}_mean']} ± {r[f'{k}_std']}"
                    for k in ("last", "avg", "bwt")
                ),
                r["seeds"],
            ]
            for r in rows
        ],
    )
    report.image(chart, "Last and Avg per method")
    manifests = {
        d.name: m
        for d in run_dirs
        if (m := _read_json(d / "manifest.json")) is not None
    }
    warnings = manifest_differences(manifests)
    missing = [d.name for d in run_dirs if d.name not in manifests]
    if missing:
        warnings.append(f"no manifest.json in {', '.join(missing)}: cannot check them")
    report.heading("Comparability")
    if warnings:
        report.text("WARNING: these runs differ beyond method and seed:")
        report.items(warnings)
    else:
        report.text(
            "The runs share config (beyond method and seed), data fingerprints, "
            "package versions and git commit."
        )
    report.heading("Runs")
    table_rows = []
    for run_dir, run_report in zip(run_dirs, run_reports, strict=True):
        metrics = _read_json(run_dir / "metrics.json")
        table_rows.append(
            [
                run_dir.name,
                *(_fmt(metrics.get(k)) for k in ("last", "avg", "bwt")),
                _fmt(metrics.get("flower_wall_seconds", metrics.get("wall_seconds"))),
                Link("report", run_report.relative_to(combo_dir).as_posix()),
            ]
        )
    report.table(["run", "Last", "Avg", "BWT", "wall s", "report"], table_rows)
    for run_dir in run_dirs:
        heatmap = run_dir / PLOTS_DIR / "accuracy_matrix.png"
        if heatmap.exists():
            report.image(heatmap, f"{run_dir.name}: accuracy matrix")
    report.text(f"Report written in {time.perf_counter() - started:.2f} s.")
    return report.write(f"FCIT comparison {combo_dir.name}")


def _reports_below(path: Path, depth: int) -> list[Path]:
    written: list[Path] = []
    for child in sorted(p for p in path.iterdir() if p.is_dir()):
        if child.name.startswith(".") or child.name == PLOTS_DIR:
            continue
        if (child / "compare.csv").exists() or (child / "metrics.json").exists():
            written += write_reports(child)
        elif depth > 1:
            written += _reports_below(child, depth - 1)
    return written


def write_reports(path: Path) -> list[Path]:
    """Report on ``path``: a run, a comparison, or a tree of them.

    Parameters
    ----------
    path : Path
        A run directory (``metrics.json``), a comparison directory
        (``compare.csv``), or a directory up to two levels above them.

    Returns
    -------
    list[Path]
        The ``report.md`` files written (run reports inside comparisons included).

    Raises
    ------
    ReportError
        When ``path`` is not a directory or holds no results.
    """
    path = Path(path)
    if not path.is_dir():
        raise ReportError(f"{path} is not a directory")
    if (path / "compare.csv").exists():
        combo = write_compare_report(path)
        runs = sorted(p.parent / "report.md" for p in path.glob("*/metrics.json"))
        return [combo, *runs]
    if (path / "metrics.json").exists():
        return [write_run_report(path)]
    written = _reports_below(path, depth=2)
    if not written:
        raise ReportError(
            f"{path}: no metrics.json or compare.csv in it or in its subdirectories"
        )
    return written

"""Comparisons of methods: the Last / Avg / BWT table and the comparison report.

:func:`compare_table` turns per-method seed lists into ``compare.md`` /
``compare.csv``; :func:`write_compare_report` reads ``compare.csv`` and the run
directories beside it; :func:`write_reports` reports on any results tree.
"""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path

import numpy as np

from fcit_flower.report import plots
from fcit_flower.report.document import (
    PLOTS_DIR,
    Link,
    Report,
    ReportError,
    fmt,
    read_json,
)
from fcit_flower.report.manifest import manifest_differences
from fcit_flower.report.run_report import write_run_report


def compare_table(rows: dict[str, dict[str, list[float]]]) -> tuple[str, str]:
    """Markdown and CSV tables of mean (+- std) Last / Avg / BWT per method."""
    md = io.StringIO()
    md.write("| Method | Last | Avg | BWT | seeds |\n|---|---|---|---|---|\n")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        [
            "method",
            "last_mean",
            "last_std",
            "avg_mean",
            "avg_std",
            "bwt_mean",
            "bwt_std",
            "seeds",
        ]
    )
    for method, values in rows.items():
        cells, numbers = [], []
        for key in ("last", "avg", "bwt"):
            mean, std = float(np.mean(values[key])), float(np.std(values[key]))
            n = len(values[key])
            cells.append(f"{mean:.2f} ± {std:.2f}" if n > 1 else f"{mean:.2f}")
            numbers += [f"{mean:.2f}", f"{std:.2f}"]
        md.write(f"| {method} | {' | '.join(cells)} | {len(values['last'])} |\n")
        writer.writerow([method, *numbers, len(values["last"])])
    return md.getvalue(), buffer.getvalue()


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
        d.name: m for d in run_dirs if (m := read_json(d / "manifest.json")) is not None
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
        metrics = read_json(run_dir / "metrics.json")
        table_rows.append(
            [
                run_dir.name,
                *(fmt(metrics.get(k)) for k in ("last", "avg", "bwt")),
                fmt(metrics.get("flower_wall_seconds", metrics.get("wall_seconds"))),
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

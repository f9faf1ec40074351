"""Comparisons of methods: the Last / Avg / BWT table and the comparison report.

:func:`compare_table` turns per-method seed lists into ``compare.md`` /
``compare.csv``; :func:`write_compare_report` reads ``compare.csv`` and the run
directories beside it; :func:`write_reports` reports on any results tree.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fcit_flower.report import plots
from fcit_flower.report.document import (
    PLOTS_DIR,
    REPORT_FAILURES,
    Link,
    Report,
    ReportError,
    fmt,
    read_json_object,
)
from fcit_flower.report.manifest import manifest_differences
from fcit_flower.report.run_report import (
    RUN_DEFINITIONS,
    STAND_IN_NOTE,
    is_mini_fcit,
    write_run_report,
)
from fcit_flower.tasks.metrics import headroom_share, mean_and_std

# Keys of a run's metrics.json summarised per method, and their column titles.
SUMMARY_KEYS = ("last", "avg", "bwt", "strict_last")
TITLES = {"last": "Last", "avg": "Avg", "bwt": "BWT", "strict_last": "Last (strict)"}
ZERO_SHOT, UPPER_BOUND = "zeroshot", "mtl"


def run_summary(metrics: Mapping[str, Any]) -> dict[str, float | None]:
    """The values of :data:`SUMMARY_KEYS` in a run's ``metrics.json``."""
    strict = metrics.get("strict") or {}
    return {
        "last": metrics.get("last"),
        "avg": metrics.get("avg"),
        "bwt": metrics.get("bwt"),
        "strict_last": strict.get("last"),
    }


def _cell(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "n/a"
    return f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"


def compare_table(
    rows: Mapping[str, Mapping[str, Sequence[float | None]]],
) -> tuple[str, str]:
    """Markdown and CSV tables of Last / Avg / BWT / strict Last per method.

    Means over seeds with the sample standard deviation (n - 1; no ± for one
    seed); BWT ``n/a`` where undefined. The headroom share of Last, ``(method -
    zeroshot) / (mtl - zeroshot)``, is filled when both references are in ``rows``.
    """
    stats = {
        method: {key: mean_and_std(values.get(key, [])) for key in SUMMARY_KEYS}
        for method, values in rows.items()
    }
    low = stats.get(ZERO_SHOT, {}).get("last", (None,))[0]
    high = stats.get(UPPER_BOUND, {}).get("last", (None,))[0]
    md = io.StringIO()
    titles = [TITLES[k] for k in SUMMARY_KEYS]
    md.write(f"| Method | {' | '.join(titles)} | headroom | seeds |\n")
    md.write("|---" * (len(titles) + 3) + "|\n")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        [
            "method",
            *(f"{k}_{part}" for k in SUMMARY_KEYS for part in ("mean", "std")),
            "headroom",
            "seeds",
        ]
    )
    for method, values in stats.items():
        mean_last = values["last"][0]
        share = (
            headroom_share(mean_last, low, high)
            if mean_last is not None and low is not None and high is not None
            else None
        )
        seeds = len(rows[method].get("last", []))
        cells = [_cell(*values[k][:2]) for k in SUMMARY_KEYS]
        md.write(
            f"| {method} | {' | '.join(cells)} | "
            f"{'-' if share is None else f'{share:.2f}'} | {seeds} |\n"
        )
        numbers = [
            "" if v is None else f"{v:.2f}" for k in SUMMARY_KEYS for v in values[k][:2]
        ]
        writer.writerow(
            [method, *numbers, "" if share is None else f"{share:.3f}", seeds]
        )
    return md.getvalue(), buffer.getvalue()


DEFINITIONS = [
    *RUN_DEFINITIONS,
    "Last (strict): Last with the reference's string comparison instead of the "
    "normalized one (case-insensitive equality; numbers, articles and punctuation "
    "not normalized).",
    "headroom: (Last - zero-shot Last) / (MTL Last - zero-shot Last), the share of "
    "the gap to the multi-task upper bound a method closes (paper's Finetune: 0.48).",
    "Scores are accuracy in percent, ROUGE-L for captioning tasks; ± is the sample "
    "standard deviation over seeds.",
]


def _optional(text: str) -> float | None:
    return float(text) if text else None


def _number(text: str) -> float:
    return float(text) if text else 0.0


# Columns of compare.csv that its report reads.
COMPARE_COLUMNS = (
    "method",
    *(f"{k}_{part}" for k in SUMMARY_KEYS for part in ("mean", "std")),
    "headroom",
    "seeds",
)


def _compare_rows(combo_dir: Path) -> list[dict[str, str]]:
    """The rows of ``compare.csv``, checked: every column, numbers that parse."""
    path = combo_dir / "compare.csv"
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            rows = list(reader)
            columns = reader.fieldnames or []
    except FileNotFoundError:
        raise ReportError(f"{combo_dir}: no compare.csv") from None
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise ReportError(f"{path}: unreadable ({error})") from None
    missing = [c for c in COMPARE_COLUMNS if c not in columns]
    if missing:
        raise ReportError(f"{path}: lacks the column(s) {missing}")
    for number, row in enumerate(rows, start=2):  # line 1 is the header
        try:
            for column in COMPARE_COLUMNS[1:-2]:
                _optional(row[column] or "")
            int(row["seeds"] or "")
        except (TypeError, ValueError):
            raise ReportError(f"{path}: line {number} holds a non-number") from None
    return rows


def _run_reports(run_dirs: list[Path], broken: list[str] | None) -> dict[Path, Path]:
    """Each run's report; a failing run is raised, or added to ``broken``."""
    reports = {}
    for run_dir in run_dirs:
        try:
            reports[run_dir] = write_run_report(run_dir)
        except REPORT_FAILURES as error:
            if broken is None:
                raise
            broken.append(f"{run_dir}: {_reason(error)}")
    return reports


def _reason(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text if isinstance(error, ReportError) else f"{type(error).__name__}: {text}"


def write_compare_report(combo_dir: Path, *, broken: list[str] | None = None) -> Path:
    """Write the comparison's bar chart, ``report.md`` and ``report.html``.

    Also (re)writes the report of every run directory found in ``combo_dir`` and
    warns when those runs differ in data or config beyond method and seed.

    Parameters
    ----------
    combo_dir : Path
        A directory holding ``compare.csv`` and the run directories.
    broken : list of str, optional
        When given, a run whose report fails is named here and left out;
        otherwise its error is raised.

    Returns
    -------
    Path
        The ``report.md`` written.
    """
    combo_dir = Path(combo_dir)
    started = time.perf_counter()
    rows = _compare_rows(combo_dir)
    reports = _run_reports(
        sorted(p.parent for p in combo_dir.glob("*/metrics.json")), broken
    )
    run_dirs = list(reports)
    methods = [r["method"] for r in rows]
    several = any(int(r["seeds"]) > 1 for r in rows)
    chart = plots.compare_bars(
        combo_dir / PLOTS_DIR / "compare.png",
        methods,
        {m: [_number(r[f"{m.lower()}_mean"]) for r in rows] for m in ("Last", "Avg")},
        {m: [_number(r[f"{m.lower()}_std"]) for r in rows] for m in ("Last", "Avg")}
        if several
        else {},
        f"{combo_dir.name}: Last / Avg"
        + (" (mean ± sample std over seeds)" if several else ""),
    )
    report = Report(combo_dir)
    report.heading(f"FCIT comparison {combo_dir.name}", 1)
    report.table(
        ["Method", *(TITLES[k] for k in SUMMARY_KEYS), "headroom", "seeds"],
        [
            [
                r["method"],
                *(
                    _cell(_optional(r[f"{k}_mean"]), _optional(r[f"{k}_std"]))
                    for k in SUMMARY_KEYS
                ),
                r["headroom"] or "-",
                r["seeds"],
            ]
            for r in rows
        ],
    )
    manifests = {
        d.name: m
        for d in run_dirs
        if (m := read_json_object(d / "manifest.json")) is not None
    }
    mini = any(is_mini_fcit(m.get("config")) for m in manifests.values())
    report.items(DEFINITIONS + ([STAND_IN_NOTE] if mini else []))
    report.image(chart, "Last and Avg per method")
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
    for run_dir, run_report in reports.items():
        metrics = read_json_object(run_dir / "metrics.json") or {}
        table_rows.append(
            [
                run_dir.name,
                *(fmt(metrics.get(k)) for k in ("last", "avg", "bwt")),
                fmt(metrics.get("wall_seconds")),
                Link("report", run_report.relative_to(combo_dir).as_posix()),
            ]
        )
    report.table(["run", "Last", "Avg", "BWT", "ServerApp s", "report"], table_rows)
    report.text(
        "ServerApp s: seconds the ServerApp ran (training and evaluation). The time "
        "the console prints per run is longer: it also counts `flwr run` starting "
        "the SuperLink, the SuperExec and Ray."
    )
    for run_dir in run_dirs:
        heatmap = run_dir / PLOTS_DIR / "accuracy_matrix.png"
        if heatmap.exists():
            report.image(heatmap, f"{run_dir.name}: accuracy matrix")
    report.text(f"Report written in {time.perf_counter() - started:.2f} s.")
    return report.write(f"FCIT comparison {combo_dir.name}")


def _reports_below(path: Path, depth: int, broken: list[str] | None) -> list[Path]:
    written: list[Path] = []
    for child in sorted(p for p in path.iterdir() if p.is_dir()):
        if child.name.startswith(".") or child.name == PLOTS_DIR:
            continue
        if (child / "compare.csv").exists() or (child / "metrics.json").exists():
            try:
                written += write_reports(child, broken=broken)
            except REPORT_FAILURES as error:
                if broken is None:
                    raise
                broken.append(f"{child}: {_reason(error)}")
        elif depth > 1:
            written += _reports_below(child, depth - 1, broken)
    return written


def write_reports(path: Path, *, broken: list[str] | None = None) -> list[Path]:
    """Report on ``path``: a run, a comparison, or a tree of them.

    Parameters
    ----------
    path : Path
        A run directory (``metrics.json``), a comparison directory
        (``compare.csv``), or a directory up to two levels above them.
    broken : list of str, optional
        When given, each run or comparison below ``path`` whose files are damaged
        is named here (``"<dir>: <reason>"``) and the others are still reported;
        otherwise the first failure is raised.

    Returns
    -------
    list[Path]
        The ``report.md`` files written (run reports inside comparisons included).

    Raises
    ------
    ReportError
        When ``path`` is not a directory, holds no results, or (without
        ``broken``) holds damaged ones.
    """
    path = Path(path)
    if not path.is_dir():
        raise ReportError(f"{path} is not a directory")
    if (path / "compare.csv").exists():
        combo = write_compare_report(path, broken=broken)
        runs = sorted(
            p.parent / "report.md"
            for p in path.glob("*/metrics.json")
            if (p.parent / "report.md").exists()
            and not any(b.startswith(f"{p.parent}: ") for b in broken or [])
        )
        return [combo, *runs]
    if (path / "metrics.json").exists():
        return [write_run_report(path)]
    written = _reports_below(path, 2, broken)
    if not written and not broken:
        raise ReportError(
            f"{path}: no metrics.json or compare.csv in it or in its subdirectories"
        )
    return written

"""``fcit-flower``: run several methods through Flower and compare them.

``fcit-flower compare --methods finetune,disco --seeds 0,1,2`` runs each method and
seed as a Flower simulation (``flwr run`` against a private local SuperLink), checks
that each run really completed (Flower's final status *and* complete results), and
prints and writes a Last / Avg / BWT table and a report (``report.md``/``.html``
with plots). ``fcit-flower report DIR`` (re)builds the reports of finished runs.
``--resume`` keeps what an interrupted comparison already computed; ``fcit-flower
resume <run-dir>`` continues one run from its last good checkpoint. ``predict`` /
``evaluate`` use an exported model; ``base`` prints the base's SHA-256; ``dp-noise``
the noise multiplier that spends a target epsilon.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO, cast

from fcit_flower.config import RunConfig
from fcit_flower.export.commands import COMMANDS, add_commands
from fcit_flower.launch.base_command import add_base_command, base_command
from fcit_flower.launch.dp_command import add_dp_command, dp_noise_command
from fcit_flower.launch.plan import parse_overrides, plan_runs, resume_overrides
from fcit_flower.launch.quiet import LogNoise, quiet_this_process
from fcit_flower.launch.recovery import (
    check_resumable,
    completed_metrics,
    finished_metrics,
    read_metrics,
    resume_hint,
    resume_point,
)
from fcit_flower.paper import PAPER_TITLE, paper_table
from fcit_flower.preflight import check_data, check_results_dir, guard_warnings
from fcit_flower.results import atomic_write_text

__all__ = ["finished_metrics", "main", "parse_overrides", "plan_runs"]

APP_DIR = Path(__file__).resolve().parents[1]


def run_one(
    config: RunConfig,
    *,
    quiet: bool,
    timeout_s: float,
    progress: bool = True,
    verbose: bool = False,
) -> dict[str, Any]:
    """Run one config through Flower; return its metrics or raise RuntimeError.

    With ``progress``, a bar (stage k/n, round r/R, ETA) follows the run's log on a
    terminal, a progress line every 30 s elsewhere; the log itself is printed
    unless ``quiet``, without known harmless noise unless ``verbose``.
    """
    from fcit_flower.launch.simulation import run_simulation_app
    from fcit_flower.report.manifest import fill_git_commit
    from fcit_flower.report.progress import ProgressStream, RunProgress, is_terminal

    metrics_path = config.run_dir / "metrics.json"
    if not config.resume:
        metrics_path.unlink(missing_ok=True)
    values = {k: v for k, v in config.to_mapping().items()}
    started = time.monotonic()
    bar = RunProgress(
        f"{config.method} s{config.seed}",
        sys.stderr,
        enabled=None if progress else False,
        heartbeat_s=30.0 if progress else 0.0,
    )
    shown = None if verbose else LogNoise(plain=not is_terminal(sys.stderr))
    stream = cast(TextIO, ProgressStream(bar, echo=not quiet, shown=shown))
    try:
        outcome = run_simulation_app(
            APP_DIR,
            values,
            num_supernodes=config.num_clients,
            client_num_cpus=1.0,
            timeout_s=timeout_s,
            stream_to=stream,
        )
    finally:
        bar.close()
    if not outcome.completed:
        if quiet:  # otherwise the log was already streamed
            tail = "\n".join(outcome.log.splitlines()[-30:])
            print(f"last log lines of the run:\n{tail}", file=sys.stderr)
        details = " ".join(str(outcome.details).split())  # one line
        raise RuntimeError(
            f"run {config.resolved_run_name} did not complete "
            f"(Flower status {outcome.status!r}: {details}); {resume_hint(config)}"
        )
    if not metrics_path.exists():
        raise RuntimeError(
            f"run {config.resolved_run_name} completed but wrote no {metrics_path}"
        )
    metrics = read_metrics(config.run_dir)
    if metrics is None or not metrics.get("complete"):
        raise RuntimeError(
            f"{metrics_path} is incomplete: not every stage was evaluated"
        )
    fill_git_commit(config.run_dir / "manifest.json", APP_DIR)  # reproducibility
    metrics["flower_run_id"] = outcome.run_id
    metrics["flower_wall_seconds"] = round(time.monotonic() - started, 1)
    return metrics


def summary_line(metrics: dict[str, Any]) -> str:
    """``Last x  Avg y  BWT z`` of a run's metrics (n/a where one is missing)."""

    def cell(key: str) -> str:
        value = metrics.get(key)
        return f"{value:.2f}" if isinstance(value, int | float) else "n/a"

    return f"Last {cell('last')}  Avg {cell('avg')}  BWT {cell('bwt')}"


def resume(args: argparse.Namespace) -> int:
    """The ``resume`` command: continue one run from its last good checkpoint.

    A finished run is answered without starting Flower; ``--run-config`` may change
    operational keys only (retries, timeouts, checkpoints, fault injection off).
    """
    run_dir = Path(args.run_dir).expanduser()
    overrides = resume_overrides(args.run_config or "")
    config, checkpoint = resume_point(run_dir, overrides)
    done = completed_metrics(run_dir, checkpoint)
    if done is not None:
        print(
            f"{config.resolved_run_name}: already complete, nothing to resume: "
            f"{summary_line(done)}  ({config.run_dir})"
        )
        return 0
    _preflight([config])
    metrics = run_one(
        config, quiet=args.quiet, timeout_s=args.timeout, verbose=args.verbose
    )
    print(f"{config.resolved_run_name}: {summary_line(metrics)}  ({config.run_dir})")
    return 0


def _preflight(configs: list[RunConfig]) -> None:
    """Results directories, data and guard warnings of ``configs``, before launch."""
    data_checked: set[tuple[tuple[str, Any], ...]] = set()
    for config in configs:
        check_results_dir(config.run_dir.parent)
        own = ("method", "run-name", "results-dir", "resume")
        key = tuple(
            sorted((k, v) for k, v in config.to_mapping().items() if k not in own)
        )
        if key not in data_checked:
            check_data(config)
            data_checked.add(key)
    for warning in dict.fromkeys(w for c in configs for w in guard_warnings(c)):
        print(f"fcit-flower: warning: {warning}", file=sys.stderr)


def compare(args: argparse.Namespace) -> int:
    """The ``compare`` command."""
    runs = plan_runs(args)
    from fcit_flower.runtime import prepare_runtime

    print(
        f"Checking the data and preparing the base model ({runs[0][1].model})...",
        file=sys.stderr,
    )
    _preflight([config for _, config in runs])
    for _, config in runs if args.resume else ():
        check_resumable(config)
    prepare_runtime(runs[0][1])
    from fcit_flower.report.comparison import compare_table, run_summary

    grouped: dict[str, dict[str, dict[str, list[float | None]]]] = {}
    for index, (combo, config) in enumerate(runs, start=1):
        print(
            f"run {index}/{len(runs)}: {config.method} seed {config.seed} ({combo})",
            file=sys.stderr,
        )
        metrics = finished_metrics(config) if args.resume else None
        if metrics is not None:
            print("    already complete: reusing its results", file=sys.stderr)
        else:
            if args.resume and (config.run_dir / "checkpoints").is_dir():
                config = config.replace(resume=True)
            metrics = run_one(
                config,
                quiet=args.quiet,
                timeout_s=args.timeout,
                progress=not args.no_progress,
                verbose=args.verbose,
            )
        print(
            f"    {summary_line(metrics)}  "
            f"({metrics.get('flower_wall_seconds', '-')} s through flwr run, "
            f"{metrics.get('wall_seconds', '-')} s in the ServerApp)",
            file=sys.stderr,
        )
        row = grouped.setdefault(combo, {}).setdefault(config.method, {})
        for key, value in run_summary(metrics).items():
            row.setdefault(key, []).append(value)
    for combo, rows in grouped.items():
        markdown, csv_text = compare_table(rows)
        out_dir = Path(args.results_dir).expanduser().resolve() / combo
        atomic_write_text(out_dir / "compare.md", markdown)
        atomic_write_text(out_dir / "compare.csv", csv_text)
        _write_compare_report(out_dir)
        print(
            f"\n## {combo} (mini-FCIT unless data-root is set; results in {out_dir})\n"
        )
        print(markdown)
        if args.paper:  # the paper's numbers, kept apart from ours
            paper = paper_table(list(rows))
            atomic_write_text(out_dir / "paper.md", f"{PAPER_TITLE}\n\n{paper}")
            print(f"## {PAPER_TITLE}\n\n{paper}")
    return 0


def _write_compare_report(out_dir: Path) -> None:
    """The comparison's report (and its runs' reports), timed."""
    from fcit_flower.report.comparison import write_compare_report

    started = time.perf_counter()
    path = write_compare_report(out_dir)
    print(
        f"Report: {path} (+ report.html), {time.perf_counter() - started:.1f} s",
        file=sys.stderr,
    )


def report(args: argparse.Namespace) -> int:
    """The ``report`` command: plots and reports of finished runs.

    In a tree, a broken run or comparison is named and skipped; the others are
    reported, and the command then fails naming the broken ones.
    """
    from fcit_flower.report.comparison import write_reports

    started = time.perf_counter()
    broken: list[str] = []
    written = write_reports(Path(args.results_dir).expanduser(), broken=broken)
    for path in written:
        print(path)
    print(
        f"{len(written)} report(s) in {time.perf_counter() - started:.1f} s",
        file=sys.stderr,
    )
    for reason in broken:
        print(f"fcit-flower: skipped: {reason}", file=sys.stderr)
    if broken:
        raise ReportIncomplete(
            f"{len(broken)} result director{'y' if len(broken) == 1 else 'ies'} "
            "could not be reported (named above)"
        )
    return 0


class ReportIncomplete(RuntimeError):
    """Some results of a tree could not be reported (the others were)."""


def _seconds(text: str) -> float:
    """An argparse type: a finite number of seconds > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number > 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(
        prog="fcit-flower", description=__doc__.splitlines()[0].replace("``", "")
    )
    sub = parser.add_subparsers(dest="command", required=True)
    cmp_ = sub.add_parser(
        "compare", help="run methods through Flower and tabulate them"
    )
    cmp_.add_argument(
        "--methods",
        default="zeroshot,finetune,disco,mtl",
        help="comma-separated registered method names or import paths of Method "
        "subclasses",
    )
    cmp_.add_argument("--seeds", default="0", help="comma-separated seeds")
    cmp_.add_argument("--scenario", default="hom", help="hom, het, or both: hom,het")
    cmp_.add_argument("--setting", default="task", help="task, capability, or both")
    cmp_.add_argument(
        "--beta", default="1.0", help="Dirichlet beta(s), comma-separated"
    )
    cmp_.add_argument("--results-dir", default="results", help="where results go")
    _add_run_options(
        cmp_,
        overrides="extra 'key=value ...' overrides",
        timeout="seconds per run",
    )
    flags = {
        "--paper": "also print the FCIT paper's numbers (7B model, real data), apart",
        "--no-progress": "no progress bar on a terminal, no progress lines elsewhere",
        "--resume": "reuse complete runs with the same config; resume interrupted ones",
    }
    for flag, text in flags.items():
        cmp_.add_argument(flag, action="store_true", help=text)
    rep_ = sub.add_parser(
        "report",
        help="write report.md/report.html with plots for finished runs",
    )
    rep_.add_argument(
        "results_dir",
        metavar="RESULTS_DIR",
        help="a run directory, a comparison directory, or any directory above them",
    )
    res = sub.add_parser(
        "resume", help="continue an interrupted run from its last good checkpoint"
    )
    res.add_argument("run_dir", help="the run's results directory")
    _add_run_options(
        res,
        overrides="operational overrides only: 'max-round-retries=5 "
        "round-timeout=600 checkpoint-keep=3 fault-rate=0'",
        timeout="seconds",
    )
    for command in (cmp_, rep_, res):  # "(default: ...)" in every --help
        command.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    for add in (add_commands, add_base_command, add_dp_command):
        add(sub)
    return parser


def _add_run_options(
    command: argparse.ArgumentParser, *, overrides: str, timeout: str
) -> None:
    """Add ``--run-config``, ``--timeout``, ``--quiet``, ``--verbose`` to a command.

    Parameters
    ----------
    command : argparse.ArgumentParser
        The sub-command's parser.
    overrides, timeout : str
        Help texts of ``--run-config`` and ``--timeout``.
    """
    command.add_argument("--run-config", default="", help=overrides)
    command.add_argument("--timeout", type=_seconds, default=3600.0, help=timeout)
    command.add_argument(
        "--quiet", action="store_true", help="do not stream Flower logs"
    )
    command.add_argument(
        "--verbose", action="store_true", help="show harmless third-party noise too"
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``fcit-flower`` console script.

    Every failure ends in one line ``fcit-flower: error: ...`` and a non-zero exit:
    2 for bad input (found before anything starts), 1 for a run that failed,
    130 when interrupted. ``FCIT_TRACEBACK=1`` shows the traceback of an
    unexpected error.
    """
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    if not getattr(args, "verbose", False):
        quiet_this_process()  # known harmless third-party warnings only
    commands = {"compare": compare, "resume": resume, "report": report, **COMMANDS}
    commands |= {"base": base_command, "dp-noise": dp_noise_command}
    try:
        return commands[args.command](args)
    except ValueError as error:  # ConfigError, DataError, ReportError, ...
        return _error(error, 2)
    except (RuntimeError, OSError) as error:
        return _error(error, 1)
    except KeyboardInterrupt:
        return _error("interrupted", 130)
    except Exception as error:  # a bug: still one line, the traceback on request
        if os.environ.get("FCIT_TRACEBACK"):
            raise
        return _error(
            f"unexpected {type(error).__name__}: {error} "
            "(FCIT_TRACEBACK=1 shows the traceback)",
            1,
        )


def _error(error: object, code: int) -> int:
    """Print ``fcit-flower: error: <error>`` on one line; return ``code``."""
    text = " ".join(str(error).split()) or type(error).__name__
    print(f"fcit-flower: error: {text}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())

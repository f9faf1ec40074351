"""``fcit-flower``: run several methods through Flower and compare them.

``fcit-flower compare --methods finetune,disco --seeds 0,1,2`` runs each method and
seed as a Flower simulation (``flwr run`` against a private local SuperLink), checks
that each run really completed (Flower's final status *and* complete results), and
prints and writes a Last / Avg / BWT table and a report (``report.md``/``.html``
with plots). ``fcit-flower report DIR`` (re)builds the reports of finished runs.
``--resume`` keeps what an interrupted comparison already computed;
``fcit-flower resume <run-dir>`` continues one run from its last good checkpoint.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, TextIO, cast

from fcit_flower.checkpoint import CheckpointStore, config_differences
from fcit_flower.config import ConfigError, RunConfig
from fcit_flower.paper import PAPER_TITLE, paper_table
from fcit_flower.results import atomic_write_text

APP_DIR = Path(__file__).resolve().parents[1]


def parse_overrides(text: str) -> dict[str, Any]:
    """Parse ``"key=value key2=value2"`` run-config overrides (TOML-ish values)."""
    out: dict[str, Any] = {}
    for item in text.split():
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        out[key] = _parse_value(raw)
    return out


def _parse_value(raw: str) -> Any:
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    for kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            pass
    return raw.strip("'\"")


def plan_runs(args: argparse.Namespace) -> list[tuple[str, RunConfig]]:
    """Validated configs of every (combination, method, seed) run."""
    from fcit_flower.methods.registry import get_method  # imports torch: not for --help

    overrides = parse_overrides(args.run_config or "")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for method in methods:
        try:
            get_method(method)
        except ConfigError as error:
            raise ConfigError(f"--methods: {error}") from None
    seeds = [int(s) for s in str(args.seeds).split(",")]
    betas = [float(b) for b in str(args.beta).split(",")]
    results = Path(args.results_dir).expanduser().resolve()
    runs = []
    for scenario in args.scenario.split(","):
        for setting in args.setting.split(","):
            for beta in betas:
                combo = f"{scenario}-{setting}-b{beta:g}"
                for method in methods:
                    for seed in seeds:
                        values = {
                            **overrides,
                            "method": method,
                            "scenario": scenario,
                            "setting": setting,
                            "beta": beta,
                            "seed": seed,
                            "results-dir": str(results / combo),
                            "run-name": f"{method}-s{seed}",
                        }
                        runs.append((combo, RunConfig.from_mapping(values)))
    return runs


def run_one(
    config: RunConfig, *, quiet: bool, timeout_s: float, progress: bool = True
) -> dict[str, Any]:
    """Run one config through Flower; return its metrics or raise RuntimeError.

    With ``progress`` and a terminal on stderr, a bar (stage k/n, round r/R, ETA)
    follows the run's log; the log itself is printed above it unless ``quiet``.
    """
    from fcit_flower.launch.simulation import run_simulation_app
    from fcit_flower.report.manifest import fill_git_commit
    from fcit_flower.report.progress import ProgressStream, RunProgress

    metrics_path = config.run_dir / "metrics.json"
    if not config.resume:
        metrics_path.unlink(missing_ok=True)
    values = {k: v for k, v in config.to_mapping().items()}
    started = time.monotonic()
    bar = RunProgress(
        f"{config.method} s{config.seed}",
        sys.stderr,
        enabled=None if progress else False,
    )
    stream = (
        cast(TextIO, ProgressStream(bar, echo=not quiet))
        if bar.enabled
        else (None if quiet else sys.stderr)
    )
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
        tail = "\n".join(outcome.log.splitlines()[-30:])
        raise RuntimeError(
            f"run {config.resolved_run_name} did not complete "
            f"(Flower status {outcome.status!r}: {outcome.details}); "
            f"last log lines:\n{tail}"
        )
    if not metrics_path.exists():
        raise RuntimeError(
            f"run {config.resolved_run_name} completed but wrote no {metrics_path}"
        )
    metrics = json.loads(metrics_path.read_text())
    if not metrics.get("complete"):
        raise RuntimeError(
            f"{metrics_path} is incomplete: not every stage was evaluated"
        )
    fill_git_commit(config.run_dir / "manifest.json", APP_DIR)  # reproducibility
    metrics["flower_run_id"] = outcome.run_id
    metrics["flower_wall_seconds"] = round(time.monotonic() - started, 1)
    return metrics


def finished_metrics(config: RunConfig) -> dict[str, Any] | None:
    """The metrics of a complete earlier run with the same config, else ``None``."""
    path = config.run_dir / "metrics.json"
    try:
        metrics = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not metrics.get("complete"):
        return None
    differing = config_differences(metrics.get("config", {}), config.to_mapping())
    return None if differing else metrics


def resume_config(run_dir: Path) -> RunConfig:
    """The config of the run in ``run_dir``, set to resume from its checkpoints.

    Raises
    ------
    ConfigError
        If ``run_dir`` holds no usable checkpoint.
    """
    store = CheckpointStore(run_dir / "checkpoints")
    checkpoint = store.latest(warn=lambda message: print(message, file=sys.stderr))
    if checkpoint is None:
        raise ConfigError(f"{run_dir}: no usable checkpoint in {store.directory}")
    values = {
        **checkpoint.meta["config"],
        "resume": True,
        "results-dir": str(run_dir.resolve().parent),
        "run-name": run_dir.resolve().name,
    }
    return RunConfig.from_mapping(values)


def summary_line(metrics: dict[str, Any]) -> str:
    """``Last x  Avg y  BWT z`` of a run's metrics (BWT may be n/a)."""
    bwt = metrics.get("bwt")
    return (
        f"Last {metrics['last']:.2f}  Avg {metrics['avg']:.2f}  "
        f"BWT {'n/a' if bwt is None else f'{bwt:.2f}'}"
    )


def resume(args: argparse.Namespace) -> int:
    """The ``resume`` command: continue one run from its last good checkpoint."""
    try:
        config = resume_config(Path(args.run_dir).expanduser())
    except ConfigError as error:
        print(f"fcit-flower: error: {error}", file=sys.stderr)
        return 2
    try:
        metrics = run_one(config, quiet=args.quiet, timeout_s=args.timeout)
    except RuntimeError as error:
        print(f"fcit-flower: error: {error}", file=sys.stderr)
        return 1
    print(f"{config.resolved_run_name}: {summary_line(metrics)}  ({config.run_dir})")
    return 0


def compare(args: argparse.Namespace) -> int:
    """The ``compare`` command."""
    try:
        runs = plan_runs(args)
    except ConfigError as error:
        print(f"fcit-flower: error: {error}", file=sys.stderr)
        return 2
    from fcit_flower.runtime import prepare_runtime

    print(
        f"Preparing data and the base model ({runs[0][1].model}) once...",
        file=sys.stderr,
    )
    try:
        prepare_runtime(runs[0][1])
    except (ValueError, OSError) as error:
        print(f"fcit-flower: error: {error}", file=sys.stderr)
        return 2
    from fcit_flower.report.comparison import run_summary

    grouped: dict[str, dict[str, dict[str, list[float | None]]]] = {}
    for index, (combo, config) in enumerate(runs, start=1):
        print(
            f"[{index}/{len(runs)}] {combo}: {config.method} seed {config.seed}",
            file=sys.stderr,
        )
        metrics = finished_metrics(config) if args.resume else None
        if metrics is not None:
            print("    already complete: reusing its results", file=sys.stderr)
        else:
            if args.resume and (config.run_dir / "checkpoints").is_dir():
                config = config.replace(resume=True)
            try:
                metrics = run_one(
                    config,
                    quiet=args.quiet,
                    timeout_s=args.timeout,
                    progress=not args.no_progress,
                )
            except RuntimeError as error:
                print(f"fcit-flower: error: {error}", file=sys.stderr)
                return 1
        print(
            f"    {summary_line(metrics)}  "
            f"({metrics.get('flower_wall_seconds', '-')} s)",
            file=sys.stderr,
        )
        row = grouped.setdefault(combo, {}).setdefault(config.method, {})
        for key, value in run_summary(metrics).items():
            row.setdefault(key, []).append(value)
    from fcit_flower.report.comparison import compare_table

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
    """The ``report`` command: plots and reports of finished runs."""
    from fcit_flower.report.comparison import write_reports
    from fcit_flower.report.document import ReportError

    started = time.perf_counter()
    try:
        written = write_reports(Path(args.results_dir).expanduser())
    except ReportError as error:
        print(f"fcit-flower: error: {error}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    print(
        f"{len(written)} report(s) in {time.perf_counter() - started:.1f} s",
        file=sys.stderr,
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(
        prog="fcit-flower", description=__doc__.splitlines()[0]
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
    cmp_.add_argument("--results-dir", default="results")
    cmp_.add_argument(
        "--run-config", default="", help="extra 'key=value ...' overrides"
    )
    cmp_.add_argument("--timeout", type=float, default=3600.0, help="seconds per run")
    cmp_.add_argument("--quiet", action="store_true", help="do not stream Flower logs")
    flags = {
        "--paper": "also print the FCIT paper's numbers (7B model, real data), apart",
        "--no-progress": "no progress bar (there is none anyway when stderr is not "
        "a terminal)",
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
    res.add_argument("--timeout", type=float, default=3600.0, help="seconds")
    res.add_argument("--quiet", action="store_true", help="do not stream Flower logs")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``fcit-flower`` console script."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    if args.command == "compare":
        return compare(args)
    if args.command == "resume":
        return resume(args)
    if args.command == "report":
        return report(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())

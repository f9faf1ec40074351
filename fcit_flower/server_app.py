"""ServerApp: config -> method -> strategy -> stages -> evaluation -> results.

Wiring only: the method (:mod:`fcit_flower.methods`) builds the strategy and the
inference model, :mod:`fcit_flower.run_state` keeps progress and checkpoints,
:mod:`fcit_flower.evaluation` scores, :mod:`fcit_flower.results` writes.
"""

from __future__ import annotations

import time
from logging import ERROR, INFO, WARNING
from typing import Any

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.common import MessageType, log
from flwr.serverapp import Grid, ServerApp

from fcit_flower.config import RunConfig
from fcit_flower.evaluation import StageEvaluation, evaluate_state
from fcit_flower.export.layout import folder_bytes, should_export
from fcit_flower.export.stage import export_stage
from fcit_flower.methods.base import Method, ServerSetup
from fcit_flower.methods.registry import get_method
from fcit_flower.preflight import guard_warnings
from fcit_flower.protocol import (
    BASE_FINGERPRINT,
    CONFIG_KEY,
    DESCRIBE,
    KIND,
    PARTITION_ID,
    ROUND_OFFSET,
    SITE_SETTINGS,
    STAGE,
    Arrays,
    read_int,
    to_numpy,
    to_record,
)
from fcit_flower.report.hooks import (
    add_sites_to_manifest,
    write_manifest,
    write_report_logged,
)
from fcit_flower.report.manifest import model_fingerprint
from fcit_flower.report.progress import attach_log_progress
from fcit_flower.results import atomic_write_json, write_results
from fcit_flower.run_state import RunState
from fcit_flower.runtime import Runtime, prepare_runtime
from fcit_flower.site_admission import admit_sites, parse_site_nodes, same_base
from fcit_flower.site_config import clip_path, hardware_differences
from fcit_flower.strategies.continual import ContinualFedAvg, Federation
from fcit_flower.strategies.privacy_ledger import PrivacyBudgetError
from fcit_flower.strategies.server_optim import optimizer_class
from fcit_flower.strategies.uploads import RoundFailedError
from fcit_flower.tasks.data import partition_statistics, test_samples
from fcit_flower.tasks.fcit_data import Sample
from fcit_flower.tasks.schedule import Schedule, describe

app = ServerApp()


def discover_clients(
    grid: Grid,
    expected: int,
    timeout: float = 300.0,
    settle: float = 30.0,
    site_nodes: str = "",
    base: str | None = None,
    reports: dict[int, dict[str, Any]] | None = None,
) -> dict[int, int]:
    """Ask every connected node for its client position; node id -> position.

    Waits for ``expected`` nodes: up to ``timeout`` seconds while nodes keep
    joining, and gives up once no new node has joined for ``settle`` seconds (a
    simulation registers all its SuperNodes at once, so a short federation fails
    fast instead of waiting out the timeout). A node that ``site-nodes`` does not
    bind to the site it claims, or that claims a site another node claims too, is
    named in the log and left out (:func:`~fcit_flower.site_admission.admit_sites`);
    so is a node whose base fingerprint differs from ``base`` (the server's). What
    every node reported goes into ``reports`` (node id -> its record and verdict).
    """
    start = last_change = time.monotonic()
    nodes = list(grid.get_node_ids())
    while len(nodes) < expected:
        now = time.monotonic()
        if now - start >= timeout or now - last_change >= settle:
            break
        time.sleep(1.0)
        current = list(grid.get_node_ids())
        if len(current) != len(nodes):
            last_change = time.monotonic()
        nodes = current
    if len(nodes) < expected:
        waited = time.monotonic() - start
        raise RuntimeError(
            f"only {len(nodes)} of num-clients={expected} clients connected after "
            f"{waited:.0f} s; in simulation run with --federation-config "
            f'"num-supernodes={expected}" (or lower num-clients)'
        )
    query = [
        Message(
            content=RecordDict({CONFIG_KEY: ConfigRecord({KIND: DESCRIBE})}),
            dst_node_id=node,
            message_type=MessageType.QUERY,
        )
        for node in nodes
    ]
    mapping, bases = {}, {}
    reports = {} if reports is None else reports
    for reply in grid.send_and_receive(query, timeout=timeout):
        if not reply.has_error():
            node = reply.metadata.src_node_id
            record = reply.content.config_records[CONFIG_KEY]
            mapping[node] = read_int(record, PARTITION_ID)
            bases[node] = str(record.get(BASE_FINGERPRINT, ""))
            reports[node] = dict(record)
        else:  # a bad site: its error names the site id
            log(
                WARNING,
                "node %s left out: its ClientApp failed: %s",
                reply.metadata.src_node_id,
                ((reply.error.reason or "").strip().splitlines() or ["?"])[-1],
            )
    refused: list[str] = []
    if base is not None:
        mapping, refused = same_base(mapping, bases, base)
    mapping, more = admit_sites(mapping, parse_site_nodes(site_nodes))
    for reason in refused + more:
        log(WARNING, "refused: %s", reason)
    for node, report in reports.items():
        report["admitted"] = node in mapping
    return mapping


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run every stage of the schedule and write the results.

    After every round and every stage's evaluation a checkpoint is written; with
    ``resume = true`` the run continues from the last good one.
    """
    started = time.monotonic()
    config = RunConfig.from_mapping(context.run_config)
    method = get_method(config.method)
    method.check_config(config)
    optimizer_class(config.server_optimizer)  # a bad name stops the run here
    for warning in guard_warnings(config):
        log(WARNING, "%s", warning)
    runtime = prepare_runtime(config)
    schedule = method.schedule(runtime.schedule)
    # Every split read (images decoded, bad records counted) before any client runs.
    test_sets = {t: test_samples(runtime.root, t, config) for t in schedule.tasks}
    log(
        INFO,
        "FCIT run %s: %s, %s, %s, beta=%g\n%s",
        config.resolved_run_name,
        config.method,
        config.scenario,
        config.setting,
        config.beta,
        describe(schedule),
    )
    write_manifest(config, runtime)
    attach_log_progress(config.resolved_run_name)  # a bar on a terminal only

    def samples(stage: int, client: int) -> list[Sample]:
        return method.client_samples(config, schedule, runtime.root, stage, client)

    atomic_write_json(
        config.run_dir / "partitions.json",
        partition_statistics(config, schedule, samples),
    )
    run = RunState(config, started)
    sites: dict[int, dict[str, Any]] = {}
    node_clients = discover_clients(
        grid,
        config.num_clients,
        site_nodes=config.site_nodes,
        base=model_fingerprint(runtime.base_path, clip_path(config)),
        reports=sites,
    )
    for report in sites.values():
        differences = hardware_differences(str(report.get(SITE_SETTINGS, "")), config)
        if report["admitted"] and differences:
            log(
                WARNING,
                "site %s runs %s: its numbers differ from the other sites' "
                "(4/8-bit quantization trains a quantized base)",
                report.get(PARTITION_ID),
                ", ".join(differences),
            )
    reported = {str(n): r for n, r in sites.items()}
    atomic_write_json(config.run_dir / "sites.json", reported)
    add_sites_to_manifest(config.run_dir, reported)
    federation = Federation.from_config(config, node_clients, run.round_done)
    setup = ServerSetup(config=config, runtime=runtime, federation=federation)
    strategy, arrays = method.build_server(setup)
    run.start(strategy)
    if strategy.current:
        arrays = dict(strategy.current)
    summary: dict[str, Any] = {}
    for stage in range(run.progress.stages_done, schedule.num_stages):
        stage_start = time.monotonic()
        remaining = run.begin_stage(stage)
        if method.trains and remaining > 0:
            log(
                INFO,
                "stage %d/%d: training, %d rounds",
                stage + 1,
                schedule.num_stages,
                remaining,
            )
            central = method.central_training(config, runtime, arrays, stage)
            if central is None:
                arrays = _train_stage(strategy, grid, arrays, config, run)
            else:
                arrays = strategy.current = central
        run.stage_trained(stage)
        if method.evaluated_once and stage < schedule.num_stages - 1:
            run.stage_seconds(stage_start)  # evaluated at the end only
        else:
            log(INFO, "stage %d/%d: evaluating", stage + 1, schedule.num_stages)
            evaluated = method.evaluation_model(config, runtime, arrays)
            evaluation = evaluate_state(config, runtime, evaluated, test_sets)
            summary = _record_stage(
                method, strategy, evaluation, schedule, run, stage_start
            )
            if should_export(config.export, stage, schedule.num_stages):
                # Before the stage-end checkpoint: a crash in between exports again.
                _export(method, config, runtime, arrays, schedule, run)
        run.save(strategy.state(), end=True)
    if not summary:  # resumed after the last stage: nothing left to do
        log(INFO, "FCIT run %s was already complete", config.resolved_run_name)
        return
    write_report_logged(config.run_dir)
    log(
        INFO,
        "FCIT run %s done: Last %.2f Avg %.2f BWT %s (%s)",
        config.resolved_run_name,
        summary["last"],
        summary["avg"],
        "n/a" if summary["bwt"] is None else f"{summary['bwt']:.2f}",
        config.run_dir.resolve(),
    )


def _train_stage(
    strategy: ContinualFedAvg,
    grid: Grid,
    arrays: Arrays,
    config: RunConfig,
    run: RunState,
) -> Arrays:
    """Flower's strategy loop for the stage's remaining rounds; the global arrays."""
    progress = run.progress
    train_config = ConfigRecord(
        {STAGE: progress.stage, ROUND_OFFSET: progress.rounds_done}
    )
    try:
        result = strategy.start(
            grid,
            initial_arrays=to_record(arrays),
            num_rounds=config.rounds_per_stage - progress.rounds_done,
            timeout=config.round_timeout,
            train_config=train_config,
        )
    except PrivacyBudgetError as error:
        # The last round's checkpoint holds everything spent; nothing more is sent.
        checkpoints = run.store.files()
        where = f"; last checkpoint {checkpoints[-1].name}" if checkpoints else ""
        log(ERROR, "FCIT run %s stopped: %s%s", config.resolved_run_name, error, where)
        raise PrivacyBudgetError(f"{error}{where}") from None
    except RoundFailedError as error:
        atomic_write_json(
            config.run_dir / "rejected_uploads.json",
            {"error": str(error), "rejected_uploads": strategy.rejected},
        )
        checkpoints = run.store.files()
        hint = (
            f"resume from {checkpoints[-1].name} with: fcit-flower resume "
            f"{config.run_dir.resolve()} (simulation), or the same flwr run with "
            "resume=true added to --run-config (deployment)"
            if checkpoints
            else "no checkpoint was written yet, so the run must be started again"
        )
        log(ERROR, "FCIT run %s stopped: %s; %s", config.resolved_run_name, error, hint)
        raise RoundFailedError(
            f"{error} (rejections in rejected_uploads.json); {hint}"
        ) from None
    return to_numpy(result.arrays) if len(result.arrays) else arrays


def _export(
    method: Method,
    config: RunConfig,
    runtime: Runtime,
    arrays: Arrays,
    schedule: Schedule,
    run: RunState,
) -> None:
    """Export the stage just evaluated (``adapters/stage-<k>/``) and log it."""
    stage = run.progress.stage
    start = time.perf_counter()
    folder = export_stage(
        method,
        config,
        runtime,
        arrays,
        schedule=schedule,
        stage=stage,
        row=run.progress.rows[stage],
    )
    log(
        INFO,
        "stage %d exported to %s in %.2f s (%d bytes)",
        stage + 1,
        folder,
        time.perf_counter() - start,
        folder_bytes(folder),
    )


def _record_stage(
    method: Method,
    strategy: ContinualFedAvg,
    evaluation: StageEvaluation,
    schedule: Schedule,
    run: RunState,
    stage_start: float,
) -> dict[str, Any]:
    """Add a stage's evaluation to the results files; their summary."""
    config, progress, stage = run.config, run.progress, run.progress.stage
    row = [round(evaluation.scores[t], 2) for t in schedule.tasks]
    strict = [round(evaluation.strict_scores[t], 2) for t in schedule.tasks]
    progress.rows.append(row)
    progress.strict_rows.append(strict)
    progress.phrasing_scores.append(evaluation.phrasing_scores)
    if method.evaluated_once:  # every row holds the final score
        progress.rows = [row] * schedule.num_stages
        progress.strict_rows = [strict] * schedule.num_stages
        progress.phrasing_scores = [evaluation.phrasing_scores] * schedule.num_stages
    run.stage_seconds(stage_start)
    run.tick()
    log(
        INFO,
        "after stage %d: %s",
        stage + 1,
        ", ".join(f"{t}={evaluation.scores[t]:.1f}" for t in schedule.tasks),
    )
    failures = [r for r in strategy.rejected if r.get("kind") != "invalid"]
    extra = {
        "method": config.method,
        "stage_seconds": progress.stage_seconds,
        "wall_seconds": round(progress.elapsed, 2),
        "rejected_uploads": strategy.rejected,
        "client_failures": len(failures),
        "invalid_uploads": len(strategy.rejected) - len(failures),
        "resumed_from": progress.resumed_from,
        "round_timings": strategy.timings,
        "examples": evaluation.examples,
        "detail_scores": evaluation.details,
    }
    if strategy.privacy is not None:
        extra["privacy"] = strategy.privacy.report()
    summary = write_results(
        config.run_dir,
        config=config.to_mapping(),
        schedule=schedule,
        rows=progress.rows,
        strict_rows=progress.strict_rows,
        extra={**extra, "phrasing_scores": progress.phrasing_scores},
    )
    for name, content in method.stage_files(strategy, evaluation).items():
        atomic_write_json(config.run_dir / name, content)
    return summary

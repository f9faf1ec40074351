"""ServerApp: config -> schedule -> strategy -> stages -> evaluation -> results.

Wiring only; the logic lives in the modules it calls.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from logging import ERROR, INFO, WARNING
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.common import MessageType, log
from flwr.serverapp import Grid, ServerApp

from fcit_flower.checkpoint import CheckpointStore, config_differences
from fcit_flower.config import ConfigError, RunConfig
from fcit_flower.evaluation import evaluate_state
from fcit_flower.methods.lora_blocks import BLOCK_METHODS, block_prefix
from fcit_flower.methods.moelora import init_moe_arrays
from fcit_flower.models.adapters import adapted_model, lora_state, projector_state
from fcit_flower.report.hooks import write_manifest, write_report_logged
from fcit_flower.report.progress import attach_log_progress
from fcit_flower.results import atomic_write_json, write_results
from fcit_flower.runtime import Runtime, prepare_runtime, token_dimension
from fcit_flower.strategies.baselines import BlockLora, Ewc
from fcit_flower.strategies.continual import (
    CONFIG_KEY,
    ContinualFedAvg,
    RoundFailedError,
    to_numpy,
    to_record,
)
from fcit_flower.strategies.disco import Disco, slots_from_arrays
from fcit_flower.strategies.server_optim import ServerOptimizer
from fcit_flower.tasks.data import partition_statistics, test_samples
from fcit_flower.tasks.schedule import describe

app = ServerApp()


def init_lora_arrays(
    shapes: dict[str, tuple[int, ...]], seed: int
) -> dict[str, np.ndarray]:
    """Fresh LoRA factors as PEFT initialises them, but seeded.

    ``lora_A`` ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (Kaiming-uniform with a=sqrt(5)),
    ``lora_B`` = 0, so a fresh adapter changes nothing.
    """
    rng = np.random.default_rng(seed)
    arrays = {}
    for key in sorted(shapes):
        shape = shapes[key]
        if ".lora_A." in key:
            bound = 1.0 / np.sqrt(shape[1])
            arrays[key] = rng.uniform(-bound, bound, size=shape).astype(np.float32)
        else:
            arrays[key] = np.zeros(shape, dtype=np.float32)
    return arrays


def lora_shapes(
    runtime: Runtime, rank: int, config: RunConfig
) -> dict[str, tuple[int, ...]]:
    """Keys and shapes of a rank-``rank`` adapter on the base."""
    model = adapted_model(
        runtime.base_path, rank, config.lora_scaling, config.lora_dropout
    )
    return {k: v.shape for k, v in lora_state(model).items()}


def discover_clients(
    grid: Grid, expected: int, timeout: float = 300.0
) -> dict[int, int]:
    """Ask every connected node for its client position; node id -> position."""
    deadline = time.monotonic() + timeout
    nodes = list(grid.get_node_ids())
    while len(nodes) < expected and time.monotonic() < deadline:
        time.sleep(1.0)
        nodes = list(grid.get_node_ids())
    if len(nodes) < expected:
        raise RuntimeError(f"only {len(nodes)} of {expected} clients connected")
    query = [
        Message(
            content=RecordDict({CONFIG_KEY: ConfigRecord({"kind": "describe"})}),
            dst_node_id=node,
            message_type=MessageType.QUERY,
        )
        for node in nodes
    ]
    mapping = {}
    for reply in grid.send_and_receive(query, timeout=timeout):
        if not reply.has_error():
            position = reply.content.config_records[CONFIG_KEY]["partition-id"]
            mapping[reply.metadata.src_node_id] = int(position)  # type: ignore[arg-type]
        else:  # issue 8: name the failing site (its error names the site id)
            log(
                WARNING,
                "node %s left out: its ClientApp failed: %s",
                reply.metadata.src_node_id,
                ((reply.error.reason or "").strip().splitlines() or ["?"])[-1],
            )
    return mapping


def build_strategy(
    config: RunConfig, runtime: Runtime, node_clients: dict[int, int]
) -> tuple[ContinualFedAvg, dict[str, np.ndarray]]:
    """The method's strategy and its initial global arrays."""
    optimizer = ServerOptimizer(
        name=config.server_optimizer,
        lr=config.server_lr,
        momentum=config.server_momentum,
        beta1=config.server_beta1,
        beta2=config.server_beta2,
        eps=config.server_eps,
    )
    projector = projector_state(runtime.bundle.model) if config.train_projector else {}
    common: dict[str, Any] = {
        "node_clients": node_clients,
        "clients_per_round": config.clients_per_round,
        "seed": config.seed,
        "optimizer": optimizer,
        "max_norm_ratio": config.max_update_norm,
        "min_uploads": config.min_clients_per_round,
        "max_retries": config.max_round_retries,
        "round_timeout": config.round_timeout,
        "max_num_examples": config.max_num_examples,
    }
    if config.method == "disco":
        shapes = lora_shapes(runtime, config.subspace_rank, config)
        strategy: ContinualFedAvg = Disco(
            num_subspaces=config.num_subspaces,
            tau=config.tau,
            token_dim=token_dimension(config, runtime),
            init_subspace=lambda slot: init_lora_arrays(
                shapes, config.seed * 1000 + slot
            ),
            max_token_norm=config.max_token_norm,
            **common,
        )
        return strategy, dict(projector)
    baseline = build_baseline(config, runtime, common)  # issue 6
    if baseline is not None:
        return baseline[0], {**baseline[1], **projector}
    shapes = lora_shapes(runtime, config.lora_rank, config)
    finetune = ContinualFedAvg(**common)
    return finetune, {
        **init_lora_arrays(shapes, config.seed),
        **projector,
    }


@dataclass
class Progress:
    """Where a run stands: what a checkpoint records besides the strategy state."""

    stage: int = 0  # the stage being trained (0-based)
    rounds_done: int = 0  # its rounds already aggregated
    stages_done: int = 0  # stages trained (and evaluated, except MTL's inner ones)
    rows: list[list[float]] = field(default_factory=list)  # accuracy after each stage
    stage_seconds: list[float] = field(default_factory=list)
    elapsed: float = 0.0  # wall seconds accounted so far, across resumes
    resumed_from: list[str] = field(default_factory=list)


def save_checkpoint(
    store: CheckpointStore,
    strategy: ContinualFedAvg,
    config: RunConfig,
    progress: Progress,
    *,
    end: bool,
) -> None:
    """Write the strategy state and the progress counters as one checkpoint."""
    arrays, strategy_meta = strategy.state()
    meta = {
        "config": config.to_mapping(),
        "progress": asdict(progress),
        "strategy": strategy_meta,
    }
    store.save(
        arrays, meta, stage=progress.stage, server_round=progress.rounds_done, end=end
    )


def resume_point(
    store: CheckpointStore, strategy: ContinualFedAvg, config: RunConfig
) -> Progress:
    """Load the last good checkpoint into ``strategy``; its progress, or a fresh one.

    Raises
    ------
    ConfigError
        If the checkpoint was written by a run with another configuration.
    """
    checkpoint = store.latest(warn=lambda message: log(WARNING, "%s", message))
    if checkpoint is None:
        log(
            WARNING,
            "resume: no usable checkpoint in %s; starting fresh",
            store.directory,
        )
        return Progress()
    saved, current = checkpoint.meta["config"], config.to_mapping()
    differing = config_differences(saved, current)
    if differing:
        details = ", ".join(
            f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in differing
        )
        raise ConfigError(
            f"cannot resume from {checkpoint.path}: run-config differs ({details})"
        )
    strategy.load_state(checkpoint.arrays, checkpoint.meta["strategy"])
    progress = Progress(**checkpoint.meta["progress"])
    progress.resumed_from.append(checkpoint.path.name)
    log(
        INFO,
        "resume: %s (stage %d, %d rounds done, %d stages evaluated)",
        checkpoint.path.name,
        progress.stage + 1,
        progress.rounds_done,
        len(progress.rows),
    )
    return progress


def build_baseline(
    config: RunConfig, runtime: Runtime, common: dict[str, Any]
) -> tuple[ContinualFedAvg, dict[str, np.ndarray]] | None:
    """Issue 6: strategy and initial adapter of EWC, O-LoRA, M-LoRA, MoELoRA.

    ``common`` holds the :class:`ContinualFedAvg` keyword arguments.
    """
    if config.method == "ewc":
        shapes = lora_shapes(runtime, config.lora_rank, config)
        ewc = Ewc(rounds_per_stage=config.rounds_per_stage, **common)
        return ewc, init_lora_arrays(shapes, config.seed)
    if config.method in BLOCK_METHODS:
        shapes = lora_shapes(runtime, config.subspace_rank, config)
        blocks = BlockLora(
            init_block=lambda k: init_lora_arrays(shapes, config.seed * 1000 + k),
            **common,
        )
        first = {block_prefix(0) + k: v for k, v in blocks.init_block(0).items()}
        return blocks, first
    if config.method == "moelora":
        moe = ContinualFedAvg(**common)
        return moe, init_moe_arrays(config, runtime.base_path)
    return None


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run every stage of the schedule and write the results.

    After every round and every stage's evaluation a checkpoint is written; with
    ``resume = true`` the run continues from the last good one.
    """
    started = time.monotonic()
    config = RunConfig.from_mapping(context.run_config)
    runtime = prepare_runtime(config)
    schedule = runtime.schedule
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
    write_manifest(config, runtime)  # issue 10: reproducibility manifest
    attach_log_progress(config.resolved_run_name)  # a bar on a terminal only
    # issue 5: per stage x client sample counts and answer summaries.
    atomic_write_json(
        config.run_dir / "partitions.json",
        partition_statistics(config, schedule, runtime.root),
    )
    node_clients = discover_clients(grid, config.num_clients)
    strategy, arrays = build_strategy(config, runtime, node_clients)
    store = CheckpointStore(config.run_dir / "checkpoints", keep=config.checkpoint_keep)
    if config.resume:
        progress = resume_point(store, strategy, config)
    else:
        store.clear()
        progress = Progress()
    if strategy.current:
        arrays = dict(strategy.current)
    clock = [started]  # start of the time not yet added to progress.elapsed

    def on_round_end(stage: int, server_round: int) -> None:
        progress.rounds_done = server_round
        progress.elapsed += time.monotonic() - clock[0]
        clock[0] = time.monotonic()
        save_checkpoint(store, strategy, config, progress, end=False)

    strategy.on_round_end = on_round_end
    test_sets = {t: test_samples(runtime.root, t, config) for t in schedule.tasks}
    summary: dict[str, Any] = {}
    for stage in range(progress.stages_done, schedule.num_stages):
        stage_start = time.monotonic()
        if progress.stage != stage:
            progress.stage, progress.rounds_done = stage, 0
        remaining = config.rounds_per_stage - progress.rounds_done
        if config.method != "zeroshot" and remaining > 0:
            log(
                INFO,
                "stage %d/%d: training, %d rounds",
                stage + 1,
                schedule.num_stages,
                remaining,
            )
            strategy.round_offset = progress.rounds_done
            try:
                arrays = _run_stage(strategy, grid, arrays, config, stage, remaining)
            except RoundFailedError as error:
                log(ERROR, "FCIT run %s stopped: %s", config.resolved_run_name, error)
                raise
        progress.rounds_done = config.rounds_per_stage
        progress.stages_done = stage + 1
        if config.method == "mtl" and stage < schedule.num_stages - 1:
            # issue 5: MTL is evaluated once, at the end; every row holds that score.
            progress.stage_seconds.append(round(time.monotonic() - stage_start, 2))
            save_checkpoint(store, strategy, config, progress, end=True)
            continue
        log(INFO, "stage %d/%d: evaluating", stage + 1, schedule.num_stages)
        evaluation = evaluate_state(config, runtime, arrays, test_sets)
        row = [round(evaluation.scores[t], 2) for t in schedule.tasks]
        progress.rows.append(row)
        if config.method == "mtl":
            progress.rows = [row] * schedule.num_stages
        progress.stage_seconds.append(round(time.monotonic() - stage_start, 2))
        progress.elapsed += time.monotonic() - clock[0]
        clock[0] = time.monotonic()
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
            "detail_scores": evaluation.details,  # issue 5: captioning scores
        }
        summary = write_results(
            config.run_dir,
            config=config.to_mapping(),
            schedule=schedule,
            rows=progress.rows,
            extra=extra,
        )
        if isinstance(strategy, Disco):
            routing = routing_report(strategy, evaluation.mean_activation)
            atomic_write_json(config.run_dir / "routing.json", routing)
        save_checkpoint(store, strategy, config, progress, end=True)
    if not summary:  # resumed after the last stage: nothing left to do
        log(INFO, "FCIT run %s was already complete", config.resolved_run_name)
        return
    write_report_logged(config.run_dir)  # issue 10: plots, report.md/html
    log(
        INFO,
        "FCIT run %s done: Last %.2f Avg %.2f BWT %.2f (%s)",
        config.resolved_run_name,
        summary["last"],
        summary["avg"],
        summary["bwt"],
        config.run_dir.resolve(),
    )


def _run_stage(
    strategy: ContinualFedAvg,
    grid: Grid,
    arrays: dict[str, np.ndarray],
    config: RunConfig,
    stage: int,
    num_rounds: int,
) -> dict[str, np.ndarray]:
    """Flower's strategy loop for the stage's rounds; returns the global arrays."""
    result = strategy.start(
        grid,
        initial_arrays=to_record(arrays),
        num_rounds=num_rounds,
        timeout=config.round_timeout,
        train_config=ConfigRecord({"stage": stage}),
    )
    return to_numpy(result.arrays) if len(result.arrays) else arrays


def routing_report(strategy: Disco, mean_activation: dict[str, list[float]]) -> dict:
    """Which slot each client/task went to, routing accuracy, and SSA weights."""
    owners: dict[int, dict[str, int]] = {}
    for entry in strategy.routing:
        owners.setdefault(entry["slot"], {}).setdefault(entry["tasks"], 0)
        owners[entry["slot"]][entry["tasks"]] += 1
    # A client is routed correctly when its slot's majority task is its own task
    # and no other task holds the majority of that slot.
    majority = {slot: max(c, key=c.__getitem__) for slot, c in owners.items()}
    correct = sum(1 for e in strategy.routing if majority[e["slot"]] == e["tasks"])
    task_slots: dict[str, set[int]] = {}
    for entry in strategy.routing:
        task_slots.setdefault(entry["tasks"], set()).add(entry["slot"])
    return {
        "assignments": strategy.routing,
        "slot_majority_task": {str(k): v for k, v in majority.items()},
        "routing_accuracy": correct / len(strategy.routing)
        if strategy.routing
        else None,
        "tasks_split_over_slots": {
            t: sorted(s) for t, s in task_slots.items() if len(s) > 1
        },
        "mean_ssa_activation": mean_activation,
        "slot_tokens": [  # issue 10: for the token-similarity plot
            [round(float(v), 6) for v in token]
            for token in slots_from_arrays(
                strategy.current, strategy.num_subspaces, strategy.tau
            ).tokens
        ],
    }

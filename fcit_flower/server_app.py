"""ServerApp: config -> schedule -> strategy -> stages -> evaluation -> results.

Wiring only; the logic lives in the modules it calls.
"""

from __future__ import annotations

import time
from logging import INFO

import numpy as np
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.common import MessageType, log
from flwr.serverapp import Grid, ServerApp

from fcit_flower.config import RunConfig
from fcit_flower.evaluation import evaluate_state
from fcit_flower.models.adapters import adapted_model, lora_state, projector_state
from fcit_flower.results import atomic_write_json, write_results
from fcit_flower.runtime import Runtime, prepare_runtime, token_dimension
from fcit_flower.strategies.continual import (
    CONFIG_KEY,
    ContinualFedAvg,
    to_numpy,
    to_record,
)
from fcit_flower.strategies.disco import Disco
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
    if config.method == "disco":
        shapes = lora_shapes(runtime, config.subspace_rank, config)
        strategy: ContinualFedAvg = Disco(
            num_subspaces=config.num_subspaces,
            tau=config.tau,
            token_dim=token_dimension(config, runtime),
            init_subspace=lambda slot: init_lora_arrays(
                shapes, config.seed * 1000 + slot
            ),
            node_clients=node_clients,
            clients_per_round=config.clients_per_round,
            seed=config.seed,
            optimizer=optimizer,
        )
        return strategy, dict(projector)
    shapes = lora_shapes(runtime, config.lora_rank, config)
    finetune = ContinualFedAvg(
        node_clients=node_clients,
        clients_per_round=config.clients_per_round,
        seed=config.seed,
        optimizer=optimizer,
    )
    return finetune, {
        **init_lora_arrays(shapes, config.seed),
        **projector,
    }


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run every stage of the schedule and write the results."""
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
    # issue 5: per stage x client sample counts and answer summaries.
    atomic_write_json(
        config.run_dir / "partitions.json",
        partition_statistics(config, schedule, runtime.root),
    )
    node_clients = discover_clients(grid, config.num_clients)
    strategy, arrays = build_strategy(config, runtime, node_clients)
    test_sets = {t: test_samples(runtime.root, t, config) for t in schedule.tasks}
    rows: list[list[float]] = []
    stage_seconds: list[float] = []
    for stage in range(schedule.num_stages):
        stage_start = time.monotonic()
        if config.method != "zeroshot":
            arrays = _run_stage(strategy, grid, arrays, config, stage)
        if config.method == "mtl" and stage < schedule.num_stages - 1:
            # issue 5: MTL is evaluated once, at the end; every row holds that score.
            stage_seconds.append(round(time.monotonic() - stage_start, 2))
            continue
        evaluation = evaluate_state(config, runtime, arrays, test_sets)
        row = [round(evaluation.scores[t], 2) for t in schedule.tasks]
        rows.append(row)
        if config.method == "mtl":
            rows = [row] * schedule.num_stages
        stage_seconds.append(round(time.monotonic() - stage_start, 2))
        log(
            INFO,
            "after stage %d: %s",
            stage + 1,
            ", ".join(f"{t}={evaluation.scores[t]:.1f}" for t in schedule.tasks),
        )
        extra = {
            "method": config.method,
            "stage_seconds": stage_seconds,
            "wall_seconds": round(time.monotonic() - started, 2),
            "rejected_uploads": strategy.rejected,
            "examples": evaluation.examples,
            "detail_scores": evaluation.details,  # issue 5: captioning scores
        }
        summary = write_results(
            config.run_dir,
            config=config.to_mapping(),
            schedule=schedule,
            rows=rows,
            extra=extra,
        )
        if isinstance(strategy, Disco):
            routing = routing_report(strategy, evaluation.mean_activation)
            atomic_write_json(config.run_dir / "routing.json", routing)
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
) -> dict[str, np.ndarray]:
    """Flower's strategy loop for the stage's rounds; returns the global arrays."""
    result = strategy.start(
        grid,
        initial_arrays=to_record(arrays),
        num_rounds=config.rounds_per_stage,
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
    }

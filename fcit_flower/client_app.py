"""ClientApp: local LoRA fine-tuning on the client's own partition (wiring only).

Message protocol (keys in :mod:`fcit_flower.strategies.continual`):

- TRAIN in: ``arrays`` (adapter or assigned subspace, + projector), ``config``
  (``stage``, ``server-round``, ``subspace`` for DISCO). Out: ``arrays`` (updated),
  ``metrics`` (``num-examples``, ``train-loss``, ``subspace``).
- QUERY ``kind=describe``: replies the client position (``partition-id``).

Per-site data (deployment, issue 8): the node config gives the client position as
``partition-id`` (what simulation sets) or ``site-id``; with a ``data-root`` key
the site trains on all of its own directory's data for the stage's tasks instead
of a partition of the shared data root. A bad site (missing directory, position
outside the schedule) raises a one-line error naming the site, which Flower
returns to the ServerApp as the reply's error.
- QUERY ``kind=identity-token``: replies the mean instruction feature of the
  client's data for ``stage`` (DISCO's identity token) and its sample count.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from flwr.app import (
    ConfigRecord,
    Context,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp

from fcit_flower.config import RunConfig
from fcit_flower.faults import INJECTED, InjectedFault, corrupt, should_fail
from fcit_flower.methods.baselines import WRAPPED_METHODS, train_wrapped_method
from fcit_flower.methods.ewc import (
    ESTIMATE_FISHER,
    estimate_fisher,
    penalty_hook,
    split_ewc,
)
from fcit_flower.methods.lora_blocks import train_wrapped
from fcit_flower.models.adapters import (
    adapted_model,
    load_lora_state,
    lora_state,
    projector_state,
    split_projector,
)
from fcit_flower.runtime import prepare_runtime, sample_features
from fcit_flower.strategies.continual import (
    ARRAYS_KEY,
    CONFIG_KEY,
    METRICS_KEY,
    NUM_EXAMPLES,
    to_numpy,
    to_record,
)
from fcit_flower.strategies.disco import INFO_KEY, TOKEN_KEY
from fcit_flower.tasks.data import client_samples, load_task, stable_seed
from fcit_flower.tasks.fcit_data import Sample

app = ClientApp()


def client_position(context: Context, num_clients: int | None = None) -> int:
    """Return the client position: ``partition-id`` or ``site-id`` of the node.

    Parameters
    ----------
    context : Context
        The ClientApp context; its node config names the position.
    num_clients : int, optional
        Clients of the schedule; a position outside ``[0, num_clients)`` is refused.

    Returns
    -------
    int
        The position.

    Raises
    ------
    ValueError
        When the node config names no position, or one outside the schedule.
    """
    node = context.node_config
    key = "partition-id" if "partition-id" in node else "site-id"
    if key not in node:
        raise ValueError(
            "node-config lacks 'partition-id' or 'site-id' (the client position)"
        )
    try:
        position = int(node[key])  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"node-config {key}={node[key]!r} is not an integer") from None
    if position < 0 or (num_clients is not None and position >= num_clients):
        raise ValueError(
            f"site {position} (node-config {key}) is not in the schedule: "
            f"num-clients={num_clients}"
        )
    return position


def site_data_root(context: Context, position: int) -> Path | None:
    """The node's own data directory (node-config ``data-root``), if it has one.

    Raises
    ------
    ValueError
        When the configured directory does not exist.
    """
    value = context.node_config.get("data-root", "")
    if not value:
        return None
    root = Path(str(value)).expanduser()
    if not root.is_dir():
        raise ValueError(
            f"site {position}: node-config data-root '{root}' is not a directory"
        )
    return root.resolve()


def site_samples(
    config: RunConfig, context: Context, stage: int, position: int
) -> list[Sample]:
    """Return the site's training samples for ``stage``.

    With a node ``data-root``: every train sample of the stage's tasks in that
    directory (the site holds only its own data). Otherwise: the site's partition
    of the shared data root, exactly as in simulation.
    """
    runtime = prepare_runtime(config)
    own = site_data_root(context, position)
    if own is None:
        return client_samples(config, runtime.schedule, runtime.root, stage, position)
    tasks = runtime.schedule.client_tasks(stage, position)
    try:
        return [s for task in tasks for s in load_task(str(own), task, "train")]
    except (OSError, ValueError) as err:
        raise ValueError(f"site {position}: cannot read {own}: {err}") from None


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Describe this client, or compute its identity token for a stage."""
    config = RunConfig.from_mapping(context.run_config)
    request = msg.content.config_records[CONFIG_KEY]
    position = client_position(context, config.num_clients)
    if request["kind"] == "describe":
        site_data_root(context, position)  # a bad site fails here, before training
        content = RecordDict({CONFIG_KEY: ConfigRecord({"partition-id": position})})
        return Message(content=content, reply_to=msg)
    runtime = prepare_runtime(config)
    stage = int(request["stage"])  # type: ignore[arg-type]
    samples = site_samples(config, context, stage, position)
    token = sample_features(config, runtime, samples).mean(axis=0)
    content = RecordDict(
        {
            ARRAYS_KEY: to_record({TOKEN_KEY: token.astype(np.float32)}),
            METRICS_KEY: MetricRecord({NUM_EXAMPLES: len(samples)}),
            INFO_KEY: ConfigRecord(
                {"tasks": "+".join(runtime.schedule.client_tasks(stage, position))}
            ),
        }
    )
    return Message(content=content, reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the received adapter on this client's partition for the stage."""
    started = time.perf_counter()
    config = RunConfig.from_mapping(context.run_config)
    runtime = prepare_runtime(config)
    request = msg.content.config_records[CONFIG_KEY]
    stage = int(request["stage"])  # type: ignore[arg-type]
    server_round = int(request["server-round"])  # type: ignore[arg-type]
    position = client_position(context, config.num_clients)
    attempt = int(request.get("attempt", 0))  # type: ignore[arg-type]
    faulty = should_fail(
        config.fault_rate, config.fault_seed, stage, server_round, position, attempt
    )
    if faulty:
        INJECTED.append((config.fault_kind, stage, server_round, position, attempt))
    if faulty and config.fault_kind == "error":
        raise InjectedFault(
            f"injected fault (fault-rate={config.fault_rate}): stage {stage + 1} "
            f"round {server_round} client {position} attempt {attempt}"
        )
    samples = site_samples(config, context, stage, position)
    seed = stable_seed(config.seed, stage, server_round, position)
    received = to_numpy(msg.content.array_records[ARRAYS_KEY])
    if config.method in WRAPPED_METHODS:  # issue 6: O-LoRA, M-LoRA, MoELoRA
        arrays, loss = train_wrapped_method(config, runtime, received, samples, seed)
        if faulty:
            arrays = corrupt(arrays, config.fault_kind)
        return _reply(msg, arrays, len(samples), loss, request, started)
    received, anchor, fisher = split_ewc(received)  # issue 6: EWC (empty otherwise)

    rank = config.subspace_rank if config.method == "disco" else config.lora_rank
    model = adapted_model(
        runtime.base_path, rank, config.lora_scaling, config.lora_dropout
    )
    adapter, projector = split_projector(received)
    load_lora_state(model, adapter)
    # No projector in the message: it is not trained, so the base's is used.
    loss = train_wrapped(
        model,
        config,
        runtime,
        samples,
        projector,
        seed=seed,
        loss_hook=penalty_hook(model, anchor, fisher, config.ewc_lambda),
    )
    arrays = lora_state(model)
    if projector:
        arrays.update(projector_state(model))
    if request.get(ESTIMATE_FISHER, False):  # issue 6: EWC, last round of a stage
        arrays.update(
            estimate_fisher(
                model,
                runtime.bundle.tokenizer,
                samples,
                image_size=runtime.bundle.image_size,
                num_image_tokens=runtime.bundle.num_image_tokens,
                batch_size=config.batch_size,
                image_mean=runtime.bundle.image_mean,
                image_std=runtime.bundle.image_std,
            )
        )
    if faulty:
        arrays = corrupt(arrays, config.fault_kind)
    return _reply(msg, arrays, len(samples), loss, request, started)


def _reply(
    msg: Message,
    arrays: dict[str, np.ndarray],
    num_examples: int,
    loss: float,
    request: ConfigRecord,
    started: float,
) -> Message:
    """The TRAIN reply: arrays and metrics (and the subspace for DISCO)."""
    metrics: dict[str, int | float | list[int] | list[float]] = {
        NUM_EXAMPLES: num_examples,
        "train-loss": loss,
        # Handler time (model from cache, data, training, state): the bench splits
        # a round into this and the rest (messaging, scheduling, aggregation).
        "client-seconds": time.perf_counter() - started,
    }
    if "subspace" in request:
        metrics["subspace"] = int(request["subspace"])  # type: ignore[arg-type]
    content = RecordDict(
        {ARRAYS_KEY: to_record(arrays), METRICS_KEY: MetricRecord(metrics)}
    )
    return Message(content=content, reply_to=msg)

"""ClientApp: local LoRA fine-tuning on the client's own partition (wiring only).

Message protocol (keys in :mod:`fcit_flower.strategies.continual`):

- TRAIN in: ``arrays`` (adapter or assigned subspace, + projector), ``config``
  (``stage``, ``server-round``, ``subspace`` for DISCO). Out: ``arrays`` (updated),
  ``metrics`` (``num-examples``, ``train-loss``, ``subspace``).
- QUERY ``kind=describe``: replies the client position (``partition-id``).
- QUERY ``kind=identity-token``: replies the mean instruction feature of the
  client's data for ``stage`` (DISCO's identity token) and its sample count.
"""

from __future__ import annotations

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
from fcit_flower.methods.baselines import WRAPPED_METHODS, train_wrapped_method
from fcit_flower.methods.ewc import (
    ESTIMATE_FISHER,
    estimate_fisher,
    penalty_hook,
    split_ewc,
)
from fcit_flower.models.adapters import (
    adapted_model,
    load_lora_state,
    load_projector_state,
    lora_state,
    projector_state,
    split_projector,
    trainable_param_groups,
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
from fcit_flower.tasks.data import client_samples, stable_seed
from fcit_flower.training import train_local

app = ClientApp()


def client_position(context: Context) -> int:
    """Return the client position: ``partition-id`` from the node config."""
    if "partition-id" not in context.node_config:
        raise ValueError("node-config lacks 'partition-id' (the client position)")
    return int(context.node_config["partition-id"])  # type: ignore[arg-type]


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Describe this client, or compute its identity token for a stage."""
    config = RunConfig.from_mapping(context.run_config)
    request = msg.content.config_records[CONFIG_KEY]
    position = client_position(context)
    if request["kind"] == "describe":
        content = RecordDict({CONFIG_KEY: ConfigRecord({"partition-id": position})})
        return Message(content=content, reply_to=msg)
    runtime = prepare_runtime(config)
    stage = int(request["stage"])  # type: ignore[arg-type]
    samples = client_samples(config, runtime.schedule, runtime.root, stage, position)
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
    config = RunConfig.from_mapping(context.run_config)
    runtime = prepare_runtime(config)
    request = msg.content.config_records[CONFIG_KEY]
    stage = int(request["stage"])  # type: ignore[arg-type]
    server_round = int(request["server-round"])  # type: ignore[arg-type]
    position = client_position(context)
    samples = client_samples(config, runtime.schedule, runtime.root, stage, position)
    seed = stable_seed(config.seed, stage, server_round, position)
    received = to_numpy(msg.content.array_records[ARRAYS_KEY])
    if config.method in WRAPPED_METHODS:  # issue 6: O-LoRA, M-LoRA, MoELoRA
        arrays, loss = train_wrapped_method(config, runtime, received, samples, seed)
        return _reply(msg, arrays, len(samples), loss, request)
    received, anchor, fisher = split_ewc(received)  # issue 6: EWC (empty otherwise)

    rank = config.subspace_rank if config.method == "disco" else config.lora_rank
    model = adapted_model(
        runtime.base_path, rank, config.lora_scaling, config.lora_dropout
    )
    adapter, projector = split_projector(received)
    load_lora_state(model, adapter)
    # No projector in the message: it is not trained, so use the base's.
    load_projector_state(model, projector or projector_state(runtime.bundle.model))
    groups = trainable_param_groups(
        model,
        lr=config.lr,
        projector_lr=config.projector_lr,
        train_projector=config.train_projector and bool(projector),
    )
    loss = train_local(
        model,
        runtime.bundle.tokenizer,
        samples,
        image_size=runtime.bundle.image_size,
        num_image_tokens=runtime.bundle.num_image_tokens,
        param_groups=groups,
        epochs=config.local_epochs,
        batch_size=config.batch_size,
        warmup_ratio=config.warmup_ratio,
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
            )
        )
    return _reply(msg, arrays, len(samples), loss, request)


def _reply(
    msg: Message,
    arrays: dict[str, np.ndarray],
    num_examples: int,
    loss: float,
    request: ConfigRecord,
) -> Message:
    """The TRAIN reply: arrays and metrics (and the subspace for DISCO)."""
    metrics: dict[str, int | float | list[int] | list[float]] = {
        NUM_EXAMPLES: num_examples,
        "train-loss": loss,
    }
    if "subspace" in request:
        metrics["subspace"] = int(request["subspace"])  # type: ignore[arg-type]
    content = RecordDict(
        {ARRAYS_KEY: to_record(arrays), METRICS_KEY: MetricRecord(metrics)}
    )
    return Message(content=content, reply_to=msg)

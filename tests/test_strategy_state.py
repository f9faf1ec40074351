"""Every strategy's state()/load_state() is an exact inverse: a restored copy
continues bit-identically, across rounds and stages, with every server optimizer."""

import numpy as np
import pytest
from fake_grid import FakeGrid
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from fcit_flower.protocol import (
    BLOCK,
    ESTIMATE_FISHER,
    FISHER_PREFIX,
    ROUND_OFFSET,
    STAGE,
    SUBSPACE,
    split_ewc,
)
from fcit_flower.strategies.blocks import BlockLora
from fcit_flower.strategies.continual import ContinualFedAvg, Federation
from fcit_flower.strategies.disco import Disco
from fcit_flower.strategies.ewc import Ewc
from fcit_flower.strategies.server_optim import ServerOptimizerSpec
from fcit_flower.strategies.uploads import RoundPolicy

NODES = {100 + c: c for c in range(6)}
SHAPES = {"m.lora_A.weight": (2, 3), "m.lora_B.weight": (3, 2)}
PROJECTOR = {"model.multi_modal_projector.linear_1.weight": np.ones((2, 2), np.float32)}


def _factors(seed):
    rng = np.random.default_rng(seed)
    return {k: rng.normal(size=s).astype(np.float32) for k, s in SHAPES.items()}


def _handler(node, message):
    """An honest client: moves every array it trains towards its own target."""
    client = NODES[node]
    config = message.content["config"]
    if message.metadata.message_type == "query":
        token = np.eye(4, dtype=np.float32)[client % 2] + 0.01 * client
        content = RecordDict(
            {
                "arrays": ArrayRecord({"identity-token": Array(token)}),
                "metrics": MetricRecord({"num-examples": 10 + client}),
            }
        )
        return Message(content=content, reply_to=message)
    rng = np.random.default_rng(
        [client, int(config["stage"]), int(config["server-round"])]
    )
    sent = {k: v.numpy() for k, v in message.content["arrays"].items()}
    plain, _, _ = split_ewc(sent)
    if BLOCK in config:  # only the stage's block goes back
        mark = f"block{int(config[BLOCK])}/"
        plain = {k: v for k, v in plain.items() if "/" not in k or k.startswith(mark)}
    arrays = {
        k: (v + 0.1 * rng.normal(size=v.shape)).astype(v.dtype)
        for k, v in plain.items()
    }
    if config.get(ESTIMATE_FISHER, False):
        arrays.update(
            {FISHER_PREFIX + k: np.abs(v) for k, v in plain.items() if "lora" in k}
        )
    metrics = {"num-examples": 10 + client}
    if SUBSPACE in config:
        metrics[SUBSPACE] = int(config[SUBSPACE])
    content = RecordDict(
        {
            "arrays": ArrayRecord({k: Array(v) for k, v in arrays.items()}),
            "metrics": MetricRecord(metrics),
        }
    )
    return Message(content=content, reply_to=message)


def _strategy(kind, optimizer):
    policy = RoundPolicy(clients_per_round=4, seed=3, max_update_norm=100.0)
    federation = Federation(NODES, policy, optimizer)
    if kind == "disco":
        return Disco(
            federation=federation,
            num_subspaces=3,
            tau=0.9,
            token_dim=4,
            init_subspace=_factors,
        ), dict(PROJECTOR)
    if kind == "ewc":
        strategy = Ewc(federation=federation, rounds_per_stage=2)
        return strategy, {**_factors(0), **PROJECTOR}
    if kind == "blocks":
        first = {f"block0/{k}": v for k, v in _factors(0).items()}
        return BlockLora(federation=federation, init_block=_factors), {
            **first,
            **PROJECTOR,
        }
    return ContinualFedAvg(federation=federation), {**_factors(0), **PROJECTOR}


def _round(strategy, grid, arrays, stage, server_round, offset):
    messages = strategy.configure_train(
        server_round - offset,
        ArrayRecord({k: Array(v) for k, v in arrays.items()}),
        ConfigRecord({STAGE: stage, ROUND_OFFSET: offset}),
        grid,
    )
    record, _ = strategy.aggregate_train(
        server_round - offset, grid.send_and_receive(messages)
    )
    return {k: v.numpy() for k, v in record.items()}


OPTIMIZERS = [
    ServerOptimizerSpec("fedavg"),
    ServerOptimizerSpec("fedavgm", lr=0.5),
    ServerOptimizerSpec("fedadam", lr=0.05, per_stage="keep"),
    ServerOptimizerSpec("FedYogi", lr=0.05, per_stage="reset"),
]


@pytest.mark.parametrize("optimizer", OPTIMIZERS, ids=lambda o: o.name + o.per_stage)
@pytest.mark.parametrize("kind", ["finetune", "disco", "ewc", "blocks"])
def test_restored_strategy_continues_identically(kind, optimizer):
    grid = FakeGrid(list(NODES), _handler)
    original, arrays = _strategy(kind, optimizer)
    # stage 0, round 1; then a checkpoint; then the rest of stage 0 and stage 1
    arrays = _round(original, grid, arrays, 0, 1, 0)
    saved = original.state()
    restored, _ = _strategy(kind, optimizer)
    restored.load_state(saved.arrays, saved.meta)
    again = restored.state()
    assert again.arrays.keys() == saved.arrays.keys() and again.meta == saved.meta
    a, b = dict(arrays), dict(arrays)
    for stage, server_round, offset in ((0, 2, 1), (1, 1, 0), (1, 2, 0)):
        a = _round(original, grid, a, stage, server_round, offset)
        b = _round(restored, grid, b, stage, server_round, offset)
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    final_a, final_b = original.state(), restored.state()
    assert final_a.arrays.keys() == final_b.arrays.keys()
    for key in final_a.arrays:
        np.testing.assert_array_equal(final_a.arrays[key], final_b.arrays[key])
    if optimizer.name != "fedavg":  # there is optimizer state to carry
        assert any(k.startswith("optimizer/") for k in final_a.arrays)

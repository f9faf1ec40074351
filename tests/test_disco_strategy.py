"""DISCO strategy logic with an in-process grid and synthetic client replies."""

import numpy as np
import pytest
from fake_grid import FakeGrid
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from fcit_flower.protocol import subspace_arrays
from fcit_flower.strategies.continual import ContinualFedAvg, Federation
from fcit_flower.strategies.disco import Disco
from fcit_flower.strategies.sampling import sample_clients
from fcit_flower.strategies.server_optim import ServerOptimizerSpec
from fcit_flower.strategies.uploads import RoundPolicy

DIM = 4
SHAPES = {"m.lora_A.weight": (2, 3), "m.lora_B.weight": (3, 2)}
PROJ = {"model.multi_modal_projector.linear_1.weight": np.ones((2, 2), np.float32)}
# clients 0-3 learn task "a" (token e0), clients 4-7 task "b" (token e1)
TOKENS = {c: np.eye(DIM)[0 if c < 4 else 1].astype(np.float32) for c in range(8)}
SIZES = {c: 10.0 * (c + 1) for c in range(8)}
NODES = {100 + c: c for c in range(8)}


def init(slot):
    return {k: np.full(s, float(slot), np.float32) for k, s in SHAPES.items()}


def make_handler(upload_fn, token_fn=lambda c: TOKENS[c]):
    def handler(node, message):
        client = NODES[node]
        if message.metadata.message_type == "query":
            content = RecordDict(
                {
                    "arrays": ArrayRecord({"identity-token": Array(token_fn(client))}),
                    "metrics": MetricRecord({"num-examples": SIZES[client]}),
                }
            )
            return Message(content=content, reply_to=message)
        sent = {k: v.numpy() for k, v in message.content["arrays"].items()}
        subspace = int(message.content["config"]["subspace"])
        arrays, metrics = upload_fn(client, sent, subspace)
        content = RecordDict(
            {
                "arrays": ArrayRecord({k: Array(v) for k, v in arrays.items()}),
                "metrics": MetricRecord(metrics),
            }
        )
        return Message(content=content, reply_to=message)

    return handler


def honest(client, sent, subspace):
    # each client moves every tensor to (client + 1)
    arrays = {k: np.full_like(v, client + 1.0) for k, v in sent.items()}
    return arrays, {"num-examples": SIZES[client], "subspace": subspace}


def make_strategy(
    *,
    k=8,
    optimizer="fedavg",
    lr=1.0,
    per_stage="reset",
    min_uploads=1,
    max_retries=0,
    max_token_norm=0.0,
):
    policy = RoundPolicy(
        clients_per_round=k,
        seed=0,
        min_clients_per_round=min_uploads,
        max_round_retries=max_retries,
        max_update_norm=100.0,  # honest deltas here are < 35
    )
    spec = ServerOptimizerSpec(optimizer, lr=lr, per_stage=per_stage)
    return Disco(
        federation=Federation(NODES, policy, spec),
        num_subspaces=4,
        tau=0.9,
        token_dim=DIM,
        init_subspace=init,
        max_token_norm=max_token_norm,
        client_tasks=lambda stage, client: ("a",) if client < 4 else ("b",),
    )


def run_round(strategy, grid, server_round=1, stage=0, arrays=None):
    arrays = ArrayRecord({k: Array(v) for k, v in (arrays or PROJ).items()})
    messages = strategy.configure_train(
        server_round, arrays, ConfigRecord({"stage": stage}), grid
    )
    replies = grid.send_and_receive(messages)
    return strategy.aggregate_train(server_round, replies)


def test_tokens_route_tasks_to_subspaces_and_aggregate_per_subspace():
    strategy = make_strategy()
    grid = FakeGrid(list(NODES), make_handler(honest))
    record, metrics = run_round(strategy, grid)
    assert strategy.assignment == {0: 0, 1: 0, 2: 0, 3: 0, 4: 1, 5: 1, 6: 1, 7: 1}
    arrays = {k: v.numpy() for k, v in record.items()}
    # subspace 0: clients 0-3 uploaded 1..4 with weights 10..40 -> 30/10 = 3
    w0 = np.average([1, 2, 3, 4], weights=[10, 20, 30, 40])
    w1 = np.average([5, 6, 7, 8], weights=[50, 60, 70, 80])
    np.testing.assert_allclose(subspace_arrays(arrays, 0)["m.lora_A.weight"], w0)
    np.testing.assert_allclose(subspace_arrays(arrays, 1)["m.lora_B.weight"], w1)
    # the projector is averaged over everyone
    w_all = np.average(range(1, 9), weights=[SIZES[c] for c in range(8)])
    np.testing.assert_allclose(arrays[next(iter(PROJ))], w_all)
    np.testing.assert_allclose(arrays["token/slot0"], TOKENS[0])
    assert metrics["num-examples"] == sum(SIZES.values())
    # routing diagnostics name each client's tasks from the schedule, not the reply
    assert {(e["client"], e["tasks"]) for e in strategy.routing} == {
        (c, "a" if c < 4 else "b") for c in range(8)
    }
    # only the assigned subspace travelled to each client
    train = [m for m in grid.sent if m.metadata.message_type == "train"]
    assert all(len(m.content["arrays"]) == len(SHAPES) + len(PROJ) for m in train)


def test_assignment_kept_within_stage_and_reset_next_stage():
    strategy = make_strategy(k=4)
    grid = FakeGrid(list(NODES), make_handler(honest))
    run_round(strategy, grid, server_round=1)
    first = dict(strategy.assignment)
    queries = sum(m.metadata.message_type == "query" for m in grid.sent)
    run_round(strategy, grid, server_round=2)
    # only newly sampled clients were asked for tokens
    new_queries = sum(m.metadata.message_type == "query" for m in grid.sent) - queries
    assert new_queries == len(set(strategy.assignment) - set(first))
    assert all(strategy.assignment[c] == s for c, s in first.items())
    run_round(strategy, grid, server_round=1, stage=1)
    assert set(strategy.assignment) <= set(range(8))
    assert len(strategy.routing) > len(first)


def _poisoned(bad_client, mutate):
    def upload(client, sent, subspace):
        arrays, metrics = honest(client, sent, subspace)
        if client == bad_client:
            arrays, metrics = mutate(arrays, metrics)
        return arrays, metrics

    return upload


POISONS = {
    "nan": lambda a, m: ({k: np.full_like(v, np.nan) for k, v in a.items()}, m),
    "shape": lambda a, m: ({k: np.zeros((5, 5), np.float32) for k in a}, m),
    "dtype": lambda a, m: ({k: v.astype(np.float64) for k, v in a.items()}, m),
    "subspace": lambda a, m: (a, {**m, "subspace": 3}),
    "count": lambda a, m: (a, {**m, "num-examples": 0}),
    "count-bound": lambda a, m: (a, {**m, "num-examples": 1e9}),
    "norm": lambda a, m: ({k: 1000 * v for k, v in a.items()}, m),
    "keys": lambda a, m: ({f"{k}.x": v for k, v in a.items()}, m),
}


@pytest.mark.parametrize("poison", sorted(POISONS))
def test_poisoned_upload_rejected_and_global_equals_run_without_it(poison):
    bad = 2
    # reference: the same round with the bad client's reply simply absent
    clean = make_strategy()
    grid_clean = FakeGrid(list(NODES), make_handler(honest))
    messages = clean.configure_train(
        1,
        ArrayRecord({k: Array(v) for k, v in PROJ.items()}),
        ConfigRecord({"stage": 0}),
        grid_clean,
    )
    replies = [
        r
        for r in grid_clean.send_and_receive(messages)
        if NODES[r.metadata.src_node_id] != bad
    ]
    expected, _ = clean.aggregate_train(1, replies)

    strategy = make_strategy()
    grid = FakeGrid(list(NODES), make_handler(_poisoned(bad, POISONS[poison])))
    record, _ = run_round(strategy, grid)
    assert len(strategy.rejected) == 1 and strategy.rejected[0]["client"] == bad
    assert strategy.rejected[0]["kind"] == "invalid"
    for key, value in expected.items():
        np.testing.assert_array_equal(record[key].numpy(), value.numpy())


def test_bad_identity_token_excludes_client():
    strategy = make_strategy(max_token_norm=10.0)
    bad_tokens = {
        1: np.zeros(DIM, np.float32),
        5: np.ones(DIM + 1, np.float32),
        6: 1e6 * TOKENS[6],
    }
    grid = FakeGrid(
        list(NODES),
        make_handler(honest, token_fn=lambda c: bad_tokens.get(c, TOKENS[c])),
    )
    run_round(strategy, grid)
    assert not {1, 5, 6} & set(strategy.assignment)
    reasons = sorted(r["reason"] for r in strategy.rejected)
    assert any("zero norm" in r for r in reasons) and any("shape" in r for r in reasons)
    assert any("norm 1e+06 exceeds 10" in r for r in reasons)


def test_finetune_strategy_fedavg_weighted():
    shapes = {"m.lora_A.weight": np.zeros((2, 3), np.float32)}
    strategy = ContinualFedAvg(
        federation=Federation(
            NODES, RoundPolicy(clients_per_round=8, seed=0), ServerOptimizerSpec()
        )
    )

    def handler(node, message):
        client = NODES[node]
        content = RecordDict(
            {
                "arrays": ArrayRecord(
                    {"m.lora_A.weight": Array(np.full((2, 3), client, np.float32))}
                ),
                "metrics": MetricRecord({"num-examples": SIZES[client]}),
            }
        )
        return Message(content=content, reply_to=message)

    grid = FakeGrid(list(NODES), handler)
    record, _ = run_round(strategy, grid, arrays=shapes)
    want = np.average(range(8), weights=[SIZES[c] for c in range(8)])
    np.testing.assert_allclose(record["m.lora_A.weight"].numpy(), want, rtol=1e-6)


def test_client_sampling_is_seeded_by_stage_and_round():
    a = sample_clients(NODES, 3, seed=0, stage=1, server_round=2)
    assert a == sample_clients(NODES, 3, seed=0, stage=1, server_round=2)
    others = {
        tuple(sample_clients(NODES, 3, seed=0, stage=s, server_round=r))
        for s in range(3)
        for r in range(3)
    }
    assert len(others) > 1

"""Client failures, retries and strategy state round trips (FakeGrid, no Flower)."""

import numpy as np
import pytest
from fake_grid import FakeGrid
from flwr.app import Error, Message
from test_disco_strategy import NODES, PROJ, honest, make_handler, make_strategy

from fcit_flower.config import FAULT_KINDS
from fcit_flower.faults import corrupt, should_fail
from fcit_flower.strategies.aggregation import upload_problem
from fcit_flower.strategies.uploads import RoundFailedError


def _failing(handler, fails):
    """Wrap a handler: ``fails(client, attempt)`` -> "error" | "silent" | None."""

    def wrapped(node, message):
        if message.metadata.message_type == "train":
            attempt = int(message.content["config"]["attempt"])
            what = fails(NODES[node], attempt)
            if what == "error":
                return Message(error=Error(300, "boom"), reply_to=message)
            if what == "silent":
                return None
            if what == "nan":
                reply = handler(node, message)
                sent = reply.content["arrays"]
                reply.content["arrays"] = _record(
                    {k: np.full(v.shape, np.nan, np.float32) for k, v in sent.items()}
                )
                return reply
        return handler(node, message)

    return wrapped


def _round(strategy, grid, server_round=1, stage=0):
    from test_disco_strategy import run_round

    return run_round(strategy, grid, server_round=server_round, stage=stage)


def test_failed_client_retried_and_round_equals_clean_round():
    clean = make_strategy()
    expected, _ = _round(clean, FakeGrid(list(NODES), make_handler(honest)))
    strategy = make_strategy(min_uploads=8, max_retries=1)
    grid = FakeGrid(
        list(NODES),
        _failing(
            make_handler(honest),
            lambda c, a: {2: "error", 5: "silent", 6: "nan"}.get(c) if a == 0 else None,
        ),
    )
    record, _ = _round(strategy, grid)
    kinds = sorted((r["client"], r["kind"]) for r in strategy.rejected)
    assert kinds == [(2, "error"), (5, "no-reply"), (6, "invalid")]
    for key in expected:
        np.testing.assert_array_equal(record[key].numpy(), expected[key].numpy())
    retried = [
        m
        for m in grid.sent
        if m.metadata.message_type == "train"
        and int(m.content["config"]["attempt"]) == 1
    ]
    assert sorted(NODES[m.metadata.dst_node_id] for m in retried) == [2, 5, 6]


def test_too_few_uploads_after_retries_stops_without_touching_global():
    strategy = make_strategy(min_uploads=8, max_retries=2)
    grid = FakeGrid(
        list(NODES),
        _failing(make_handler(honest), lambda c, a: "error" if c == 3 else None),
    )
    arrays = {**PROJ}
    messages = strategy.configure_train(1, _record(arrays), _config(0), grid)
    before = {k: v.copy() for k, v in strategy.current.items()}
    replies = grid.send_and_receive(messages)
    with pytest.raises(RoundFailedError, match="7 valid uploads after 2 retries"):
        strategy.aggregate_train(1, replies)
    assert strategy.current.keys() == before.keys()
    for key, value in before.items():
        np.testing.assert_array_equal(strategy.current[key], value)
    assert [r["kind"] for r in strategy.rejected] == ["error"] * 3


def test_failures_below_minimum_need_no_retry():
    strategy = make_strategy(min_uploads=6, max_retries=3)
    grid = FakeGrid(
        list(NODES),
        _failing(make_handler(honest), lambda c, a: "error" if c < 2 else None),
    )
    _round(strategy, grid)
    assert len(strategy.rejected) == 2  # 6 of 8 arrived: aggregated, no retry
    assert all(
        int(m.content["config"]["attempt"]) == 0
        for m in grid.sent
        if m.metadata.message_type == "train"
    )


@pytest.mark.parametrize("optimizer", ["fedavg", "fedadam", "fedavgm"])
def test_state_round_trip_continues_identically(optimizer):
    def fresh():
        return make_strategy(k=4, optimizer=optimizer, lr=0.5)

    grid = FakeGrid(list(NODES), make_handler(honest))
    original = fresh()
    _round(original, grid, server_round=1)
    arrays, meta = original.state()
    restored = fresh()
    restored.load_state(arrays, meta)
    for server_round, stage in ((2, 0), (1, 1), (2, 1)):
        a, _ = _round(original, grid, server_round=server_round, stage=stage)
        b, _ = _round(restored, grid, server_round=server_round, stage=stage)
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key].numpy(), b[key].numpy())
    assert original.assignment == restored.assignment
    assert original.routing == restored.routing


def test_fault_draws_are_seeded_and_near_the_rate():
    draws = [
        should_fail(0.3, 7, s, r, c, 0)
        for s in range(5)
        for r in range(5)
        for c in range(20)
    ]
    assert draws == [
        should_fail(0.3, 7, s, r, c, 0)
        for s in range(5)
        for r in range(5)
        for c in range(20)
    ]
    assert 0.25 < np.mean(draws) < 0.35
    assert not any(should_fail(0.0, 7, 0, 1, c, 0) for c in range(100))
    # a retry draws again
    assert [should_fail(0.5, 1, 0, 1, c, 0) for c in range(50)] != [
        should_fail(0.5, 1, 0, 1, c, 1) for c in range(50)
    ]


def _record(arrays):
    from flwr.app import Array, ArrayRecord

    return ArrayRecord({k: Array(v) for k, v in arrays.items()})


def _config(stage):
    from flwr.app import ConfigRecord

    return ConfigRecord({"stage": stage})


def test_every_corrupted_upload_fails_validation():
    good = {"a": np.ones((2, 3), np.float32), "b": np.zeros((3, 2), np.float32)}
    for kind in FAULT_KINDS:
        if kind == "error":
            continue
        bad = corrupt(good, kind)
        assert upload_problem(bad, good, max_norm_ratio=10.0) is not None, kind
    with pytest.raises(ValueError, match="unknown fault kind"):
        corrupt(good, "error")

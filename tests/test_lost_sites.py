"""A lost site: rounds go on with the connected clients, failures named by site."""

import logging

import pytest
from fake_grid import FakeGrid
from flwr.server.superlink.linkstate.utils import (
    create_message_error_unavailable_res_message,
)
from test_disco_strategy import NODES, honest, make_handler, make_strategy, run_round

from fcit_flower.strategies.sampling import RoundFailedError, sample_clients


def test_fewer_connected_than_per_round_samples_every_connected_one():
    available = {10: 0, 11: 1, 13: 3}
    picked = sample_clients(available, 4, minimum=2, seed=0, stage=0, server_round=1)
    assert picked == [(10, 0), (11, 1), (13, 3)]
    with pytest.raises(RoundFailedError, match="3 clients connected, min-clients"):
        sample_clients(available, 4, minimum=4, seed=0, stage=1, server_round=2)


def test_all_connected_sampling_is_unchanged_by_the_minimum():
    available = {100 + c: c for c in range(10)}
    for server_round in range(1, 6):
        a = sample_clients(available, 5, seed=3, stage=2, server_round=server_round)
        b = sample_clients(
            available, 5, minimum=5, seed=3, stage=2, server_round=server_round
        )
        assert a == b and len(a) == 5


class PartialGrid(FakeGrid):
    """The SuperLink's view after a site is lost: its node is not listed."""

    def __init__(self, connected, handler):
        super().__init__(list(NODES), handler)
        self.connected = connected

    def get_node_ids(self):
        return list(self.connected)


def test_a_lost_site_is_logged_once_and_rounds_go_on(caplog):
    strategy = make_strategy(k=8, min_uploads=6)
    grid = PartialGrid([n for n in NODES if NODES[n] != 3], make_handler(honest))
    with caplog.at_level(logging.INFO, logger="flwr"):
        for server_round in (1, 2):
            run_round(strategy, grid, server_round=server_round)
    lost = [r for r in caplog.records if "not connected (lost sites)" in r.message]
    assert len(lost) == 1 and "clients [3]" in lost[0].message
    trained = {NODES[m.metadata.dst_node_id] for m in grid.sent}
    assert 3 not in trained and len(trained) == 7
    assert not strategy.rejected  # not a failure: it was never asked
    grid.connected = list(NODES)
    with caplog.at_level(logging.INFO, logger="flwr"):
        run_round(strategy, grid, server_round=3)
    assert any("clients [3] connected again" in r.message for r in caplog.records)


def test_too_few_connected_sites_stop_the_round():
    strategy = make_strategy(k=8, min_uploads=6)
    grid = PartialGrid([100, 101, 102, 103, 104], make_handler(honest))
    with pytest.raises(RoundFailedError, match="5 clients connected"):
        run_round(strategy, grid)


def test_node_unavailable_reply_counts_once_under_the_site_it_is_about():
    inner = make_handler(honest)

    def handler(node, message):
        if NODES[node] == 5 and message.metadata.message_type == "train":
            # what Flower's SuperLink answers for a node that stopped its heartbeat
            return create_message_error_unavailable_res_message(
                message.metadata, "node_unavail"
            )
        return inner(node, message)

    strategy = make_strategy(k=8)
    run_round(strategy, FakeGrid(list(NODES), handler))
    assert [(r["client"], r["kind"]) for r in strategy.rejected] == [(5, "error")]
    assert "Node Unavailable" in strategy.rejected[0]["reason"]


def test_identity_token_query_waits_the_round_timeout():
    class TimedGrid(FakeGrid):
        timeouts: list = []

        def send_and_receive(self, messages, *, timeout=None):
            self.timeouts.append(timeout)
            return super().send_and_receive(messages, timeout=timeout)

    strategy = make_strategy(k=8)
    policy = strategy.policy
    assert strategy.query_timeout == policy.round_timeout == 3600.0
    grid = TimedGrid(list(NODES), make_handler(honest))
    run_round(strategy, grid)
    assert grid.timeouts[0] == policy.round_timeout  # the token query comes first

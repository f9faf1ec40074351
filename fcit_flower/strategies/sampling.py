"""Which clients a round asks: seeded sampling, lost sites, who a reply is about.

Pure logic on node ids and client positions (no torch, no training).
"""

from __future__ import annotations

from collections.abc import Mapping
from logging import INFO, WARNING

import numpy as np
from flwr.app import Message
from flwr.common import log


class RoundFailedError(RuntimeError):
    """Too few valid uploads in a round, even after retrying the failed clients."""


def sample_clients(
    available: Mapping[int, int],
    k: int,
    *,
    minimum: int = 1,
    seed: int,
    stage: int,
    server_round: int,
) -> list[tuple[int, int]]:
    """Pick ``k`` (node id, client position) pairs, seeded by stage and round.

    Positions are sampled, not node ids, so the same seed picks the same clients in
    simulation and deployment whatever ids the nodes got. With fewer than ``k``
    clients connected (a lost site) every connected one is picked, as long as
    there are ``minimum`` (``min-clients-per-round``).

    Raises
    ------
    RoundFailedError
        If fewer than ``minimum`` clients are connected.
    """
    positions = sorted(available.values())
    if len(positions) < max(minimum, 1):
        raise RoundFailedError(
            f"stage {stage + 1} round {server_round}: {len(positions)} clients "
            f"connected, min-clients-per-round={minimum}"
        )
    rng = np.random.default_rng([seed, stage, server_round])
    size = min(k, len(positions))
    chosen = sorted(rng.choice(positions, size=size, replace=False).tolist())
    node_of = {pos: node for node, pos in available.items()}
    return [(node_of[p], p) for p in chosen]


def connected_clients(
    node_clients: Mapping[int, int],
    connected: set[int],
    lost_before: set[int],
    *,
    minimum: int,
    where: str,
) -> tuple[dict[int, int], set[int]]:
    """The connected clients (node id -> position) and the positions of the lost.

    A change in who is lost is logged once, by client position (``where`` names
    the round, ``"stage 2 round 1"``).
    """
    available = {n: p for n, p in node_clients.items() if n in connected}
    lost = {p for n, p in node_clients.items() if n not in connected}
    if lost - lost_before:
        log(
            WARNING,
            "%s: clients %s not connected (lost sites); rounds go on with the %d "
            "connected while at least min-clients-per-round=%d are",
            where,
            sorted(lost - lost_before),
            len(available),
            minimum,
        )
    if lost_before - lost:
        log(INFO, "%s: clients %s connected again", where, sorted(lost_before - lost))
    return available, lost


def reply_source(
    reply: Message, destinations: Mapping[str, int], known: Mapping[int, int]
) -> int:
    """The node a reply is about.

    A node's own reply names it as its source (a node of ``known``, node id ->
    client). A reply the SuperLink writes itself ("Node Unavailable", an expired
    message) carries the SuperLink's node id instead; the node it stands for is
    the destination of the message it replies to (``destinations``: message id ->
    destination node of the messages sent).
    """
    source = reply.metadata.src_node_id
    if source in known:
        return source
    return destinations.get(reply.metadata.reply_to_message_id or "", source)

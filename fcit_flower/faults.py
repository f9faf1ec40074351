"""Fault injection for testing failure handling in simulation (pure numpy).

With ``fault-rate = p`` a sampled client fails its training with probability ``p``,
decided by a generator seeded from (fault-seed, stage, round, client, attempt): the
same config fails the same clients, and a retry (the next attempt) draws again.
"""

from __future__ import annotations

import numpy as np


class InjectedFault(RuntimeError):
    """A failure raised on purpose by ``fault-rate``."""


def should_fail(
    rate: float, seed: int, stage: int, server_round: int, client: int, attempt: int
) -> bool:
    """Whether this client's training attempt fails on purpose."""
    if rate <= 0:
        return False
    rng = np.random.default_rng([seed, stage, server_round, client, attempt])
    return bool(rng.random() < rate)

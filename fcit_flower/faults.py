"""Fault injection for testing failure handling in simulation (pure numpy).

With ``fault-rate = p`` a sampled client misbehaves in a round with probability
``p``, decided by a generator seeded from (fault-seed, stage, round, client,
attempt): the same config hits the same clients, and a retry draws again. What it
does is ``fault-kind``: ``error`` raises (a crashed client), ``nan`` / ``norm`` /
``shape`` / ``dtype`` train normally and then upload a corrupted update (a buggy or
malicious client) that the server must reject.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fcit_flower.config import FAULT_KINDS

# Every fault injected in this process, as (kind, stage, round, client, attempt):
# lets an in-process campaign compare what was injected with what the server caught.
INJECTED: list[tuple[str, int, int, int, int]] = []


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


def corrupt(arrays: Mapping[str, np.ndarray], kind: str) -> dict[str, np.ndarray]:
    """The upload of a faulty client: ``arrays`` damaged as ``kind`` says."""
    if kind == "nan":
        return {k: np.full_like(v, np.nan) for k, v in arrays.items()}
    if kind == "norm":
        return {k: v * 1000.0 + 1.0 for k, v in arrays.items()}
    if kind == "shape":
        return {
            k: np.zeros((v.shape[0] + 1, *v.shape[1:]), v.dtype)
            for k, v in arrays.items()
        }
    if kind == "dtype":
        return {k: v.astype(np.float64) for k, v in arrays.items()}
    raise ValueError(f"unknown fault kind {kind!r}; allowed: {list(FAULT_KINDS)}")

"""Noise for a target epsilon: the run's own accountant run backwards.

Uses exactly the accounting of :mod:`fcit_flower.strategies.privacy_ledger`
(sampling, neighbouring relation, one event per round), so a run with the noise
found here reports at most the target epsilon (identity-token events aside).
"""

from __future__ import annotations

import dataclasses

from flwr.serverapp import RdpAccountant

from fcit_flower.privacy import PrivacySpec
from fcit_flower.strategies.privacy_ledger import accountant_config, round_event


def planned_epsilon(spec: PrivacySpec, *, rounds: int) -> float:
    """Epsilon at ``dp-delta`` after ``rounds`` rounds' releases (no token events)."""
    accountant = RdpAccountant(accountant_config(spec))
    accountant.compose(round_event(spec), count=rounds)
    return float(accountant.get_epsilon(spec.delta))


def noise_for_epsilon(
    spec: PrivacySpec, *, epsilon: float, rounds: int, rel_tol: float = 1e-3
) -> float:
    """The smallest ``dp-noise`` whose ``rounds`` releases spend at most ``epsilon``.

    Bisection on the run's own accounting (:func:`planned_epsilon`: its sampling,
    neighbouring relation and ``dp-delta``); identity-token events are not
    included. The result is rounded up, so the run spends at most ``epsilon``.

    Raises
    ------
    ValueError
        When ``epsilon`` is not positive or ``spec.mode`` adds no update noise.
    """
    if spec.mode not in ("central", "local"):
        raise ValueError(f"dp={spec.mode!r}: no update noise to calibrate")
    if not epsilon > 0:
        raise ValueError(f"epsilon={epsilon!r}: must be > 0")

    def spent(noise: float) -> float:
        return planned_epsilon(dataclasses.replace(spec, noise=noise), rounds=rounds)

    low, high = 0.0, 1.0
    while spent(high) > epsilon:  # epsilon falls as the noise grows
        low, high = high, 2 * high
    while high - low > rel_tol * high:
        middle = (low + high) / 2
        if spent(middle) > epsilon:
            low = middle
        else:
            high = middle
    return high

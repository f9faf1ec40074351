"""Dirichlet quantity skew: how many samples each client gets (pure numpy).

FCIT skews client *sizes*, not labels: each stage's data is split over the clients
by proportions drawn from Dirichlet(beta), with a minimum per client. (The authors'
code passes beta where the minimum belongs; here the two are separate arguments.)
The resulting sizes feed flwr-datasets' ``SizePartitioner``.
"""

from __future__ import annotations

import numpy as np


def dirichlet_sizes(
    num_samples: int, num_clients: int, beta: float, *, seed: int, min_size: int = 1
) -> list[int]:
    """Draw client sample counts from Dirichlet(beta) proportions.

    Parameters
    ----------
    num_samples : int
        Samples to split; every one is assigned (sizes sum to ``num_samples``).
    num_clients : int
        Number of clients.
    beta : float
        Concentration (> 0); small beta gives very unequal sizes.
    seed : int
        Seed of the draw.
    min_size : int
        Guaranteed samples per client (requires ``num_samples >= num_clients *
        min_size``).

    Returns
    -------
    list of int
        One size per client, summing to ``num_samples``.
    """
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    if num_clients <= 0:
        raise ValueError(f"num_clients must be > 0, got {num_clients}")
    if num_samples < num_clients * min_size:
        raise ValueError(
            f"{num_samples} samples cannot give {num_clients} clients "
            f"at least {min_size} each"
        )
    rng = np.random.default_rng(seed)
    proportions = rng.dirichlet(np.full(num_clients, beta))
    spare = num_samples - num_clients * min_size
    # Largest-remainder rounding keeps the total exact.
    raw = proportions * spare
    sizes = np.floor(raw).astype(int)
    remainder = spare - int(sizes.sum())
    if remainder:
        sizes[np.argsort(-(raw - sizes), kind="stable")[:remainder]] += 1
    return [int(s) + min_size for s in sizes]


def size_gini(sizes: list[int]) -> float:
    """Gini coefficient of the sizes (0 = equal); a statistic for the results."""
    values = np.sort(np.asarray(sizes, dtype=float))
    if values.sum() == 0:
        return 0.0
    n = len(values)
    cumulative = np.cumsum(values)
    return float((n + 1 - 2 * (cumulative / cumulative[-1]).sum()) / n)

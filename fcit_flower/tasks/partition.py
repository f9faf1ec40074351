"""Dirichlet quantity skew: how many samples each client gets (pure numpy).

FCIT skews client *sizes*, not labels: each stage's data is split over the clients
by proportions drawn from Dirichlet(beta), with a minimum per client. (The authors'
code passes beta where the minimum belongs; here the two are separate arguments.)
The resulting sizes feed flwr-datasets' ``SizePartitioner``.

Option ``partition = "label"`` skews *answers* instead: for each distinct
answer, Dirichlet(beta) proportions over the clients (flwr-datasets'
``DirichletPartitioner``, Hsu et al., 2019), so clients see different answer mixes.
Free-form answers (captions) are nearly all distinct, which makes this close to an
unskewed random split for them.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
from datasets import Dataset
from flwr_datasets.partitioner import DirichletPartitioner


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


def label_skew_indices(
    answers: Sequence[str],
    num_clients: int,
    beta: float,
    *,
    seed: int,
    min_size: int = 1,
) -> list[list[int]]:
    """Split sample indices over clients with Dirichlet(beta) skew per answer.

    Uses flwr-datasets' ``DirichletPartitioner`` (which redraws until every client
    has ``min_size`` samples, up to 10 times).

    Raises
    ------
    ValueError
        When no draw gives every client ``min_size`` samples.
    """
    if num_samples_too_few(len(answers), num_clients, min_size):
        raise ValueError(
            f"{len(answers)} samples cannot give {num_clients} clients "
            f"at least {min_size} each"
        )
    partitioner = DirichletPartitioner(
        num_partitions=num_clients,
        partition_by="answer",
        alpha=beta,
        min_partition_size=min_size,
        self_balancing=False,
        shuffle=True,
        seed=seed,
    )
    partitioner.dataset = Dataset.from_dict(
        {"index": list(range(len(answers))), "answer": list(answers)}
    )
    try:
        with warnings.catch_warnings():  # one warning per redraw otherwise
            warnings.simplefilter("ignore", UserWarning)
            return [
                list(partitioner.load_partition(c)["index"]) for c in range(num_clients)
            ]
    except ValueError as error:
        raise ValueError(
            f"label partition with beta={beta} could not give each of {num_clients} "
            f"clients {min_size} samples ({error}); raise beta, lower "
            "min-client-size or use partition=quantity"
        ) from None


def num_samples_too_few(num_samples: int, num_clients: int, min_size: int) -> bool:
    """Whether ``num_samples`` cannot give every client ``min_size``."""
    return num_samples < num_clients * min_size


def answer_summary(answers: Sequence[str], top: int = 3) -> dict[str, Any]:
    """Sample count, distinct answers and the most common answers of one client."""
    counts = Counter(answers)
    return {
        "samples": len(answers),
        "distinct_answers": len(counts),
        "top_answers": [[a, n] for a, n in counts.most_common(top)],
    }

"""Where a run's data comes from: the data root, task splits, client partitions.

Nothing here knows about Flower or models; the ClientApp asks for its own partition
(:func:`client_samples`), the ServerApp for test sets (:func:`test_samples`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset
from flwr_datasets.partitioner import SizePartitioner

from fcit_flower.cache import default_cache_dir
from fcit_flower.config import RunConfig
from fcit_flower.tasks.fcit_data import DataError, Sample, load_split, locate
from fcit_flower.tasks.mini_fcit import VERSION as MINI_FCIT_VERSION
from fcit_flower.tasks.mini_fcit import build_mini_fcit
from fcit_flower.tasks.partition import (
    answer_summary,
    dirichlet_sizes,
    label_skew_indices,
    size_gini,
)
from fcit_flower.tasks.schedule import Schedule

MINI_FCIT_IMAGE_SIZE = 32


def data_root_path(config: RunConfig) -> Path:
    """Where the run's data lies: ``data-root``, or the embedded build's folder."""
    if config.data_root:
        return Path(config.data_root).expanduser().resolve()
    return default_cache_dir() / (
        f"mini-fcit-{MINI_FCIT_VERSION}-d{config.data_seed}-n{config.train_size}"
        f"-v{config.val_size}-t{config.test_size}"
    )


def data_root(config: RunConfig) -> Path:
    """The configured data root, building the embedded mini-FCIT when it is empty."""
    root = data_root_path(config)
    if config.data_root:
        return root
    return build_mini_fcit(
        root,
        seed=config.data_seed,
        train_size=config.train_size,
        val_size=config.val_size,
        test_size=config.test_size,
        image_size=MINI_FCIT_IMAGE_SIZE,
    )


@lru_cache(maxsize=64)
def load_task(
    root: str,
    task: str,
    split: str,
    image_root: str = "",
    max_bad_fraction: float = 0.05,
) -> tuple[Sample, ...]:
    """One task split, read once per process."""
    return tuple(
        load_split(
            Path(root),
            task,
            split,  # type: ignore[arg-type]
            image_root=Path(image_root).expanduser() if image_root else None,
            max_bad_fraction=max_bad_fraction,
        )
    )


def config_load_task(
    config: RunConfig, root: Path, task: str, split: str
) -> tuple[Sample, ...]:
    """:func:`load_task` with the config's image root and bad-record threshold."""
    return load_task(str(root), task, split, config.image_root, config.max_bad_fraction)


def missing_tasks(
    root: Path, tasks: Sequence[str], splits: Sequence[str] = ("train", "test")
) -> list[str]:
    """The tasks of ``tasks`` without a file of one of ``splits`` under ``root``."""
    missing = []
    for task in tasks:
        try:
            for split in splits:
                locate(root, task, split)  # type: ignore[arg-type]
        except DataError:
            missing.append(task)
    return missing


def require_task_files(
    root: Path, tasks: Sequence[str], splits: Sequence[str] = ("train", "test")
) -> None:
    """Check that ``root`` holds the ``splits`` files of every task of ``tasks``.

    Raises
    ------
    DataError
        Naming every task whose files are missing, and the folder layout expected.
    """
    missing = missing_tasks(root, tasks, splits)
    if missing:
        raise DataError(
            f"data-root {root} lacks {'/'.join(splits)} files of {missing}, needed by "
            f"the schedule (a folder per dataset, e.g. {root / 'ImageNet-R'})"
        )


def client_samples(
    config: RunConfig, schedule: Schedule, root: Path, stage: int, client: int
) -> list[Sample]:
    """The training samples of ``client`` at ``stage``.

    The stage's data of a task unit (pooled and shuffled for capability groups) is
    split over the clients that learn that unit, with Dirichlet(beta) sizes
    (flwr-datasets' ``SizePartitioner``), or with Dirichlet(beta) over answers
    (``partition = "label"``). Seeded by run seed and stage.
    """
    pool, position, num_peers, unit = _unit_pool(config, schedule, root, stage, client)
    seed = stable_seed(config.seed, stage, *unit)
    return _split(config, pool, position, num_peers, seed, config.min_client_size)


def pooled_client_samples(
    config: RunConfig, schedule: Schedule, root: Path, stage: int, client: int
) -> list[Sample]:
    """The multi-task reference's samples of ``client`` at ``stage``.

    The pooled data of all tasks is split over the clients once; stage ``s`` gets
    chunk ``s`` of each client's share, so every pooled sample is learned once.
    """
    pool, position, num_peers, unit = _unit_pool(config, schedule, root, stage, client)
    stages = schedule.num_stages
    seed = stable_seed(config.seed, *unit)
    share = _split(
        config, pool, position, num_peers, seed, config.min_client_size * stages
    )
    chunk = np.array_split(np.arange(len(share)), stages)[stage]
    return [share[i] for i in chunk]


def _unit_pool(
    config: RunConfig, schedule: Schedule, root: Path, stage: int, client: int
) -> tuple[list[Sample], int, int, tuple[str, ...]]:
    """A client's task unit: its pooled data, the client's place, peers, the unit."""
    unit = schedule.client_tasks(stage, client)
    peers = [c for c, u in enumerate(schedule.assignments[stage]) if u == unit]
    pool = [s for task in unit for s in config_load_task(config, root, task, "train")]
    return pool, peers.index(client), len(peers), unit


def _split(
    config: RunConfig,
    pool: list[Sample],
    position: int,
    num_peers: int,
    seed: int,
    min_size: int,
) -> list[Sample]:
    """Share ``position`` of ``num_peers`` of the shuffled ``pool``."""
    order = np.random.default_rng(seed).permutation(len(pool))
    if config.partition == "label":  # Dirichlet over answers
        parts = label_skew_indices(
            [pool[i].answer for i in order],
            num_peers,
            config.beta,
            seed=seed,
            min_size=min_size,
        )
        return [pool[order[i]] for i in parts[position]]
    sizes = dirichlet_sizes(
        len(pool), num_peers, config.beta, seed=seed, min_size=min_size
    )
    partitioner = SizePartitioner(partition_sizes=sizes)
    partitioner.dataset = Dataset.from_dict({"index": order.tolist()})
    indices = partitioner.load_partition(position)["index"]
    return [pool[i] for i in indices]


def test_samples(
    root: Path, task: str, config: RunConfig | None = None
) -> list[Sample]:
    """The fixed evaluation set of ``task``.

    Its test split, or its validation split with ``eval-split = "val"`` (for
    choosing hyper-parameters).
    """
    if config is None:
        return list(load_task(str(root), task, "test"))
    return list(config_load_task(config, root, task, config.eval_split))


def stable_seed(*parts: object) -> int:
    """Return a 32-bit seed from ``parts``, the same in every process.

    Python's ``hash`` of strings is salted per process, so it cannot be used.
    """
    digest = np.random.SeedSequence([abs(hash_text(str(p))) for p in parts])
    return int(digest.generate_state(1)[0])


def hash_text(text: str) -> int:
    """Stable integer hash of ``text``."""
    value = 0
    for char in text.encode():
        value = (value * 131 + char) % (2**31 - 1)
    return value


def partition_statistics(
    config: RunConfig,
    schedule: Schedule,
    samples: Callable[[int, int], Sequence[Sample]],
) -> dict[str, Any]:
    """Per stage and client: sample count and answer histogram summary.

    ``samples(stage, client)`` gives a client's training samples, as the clients
    draw them; the result is written to ``partitions.json`` at the start of a run.
    """
    stages = []
    for stage in range(schedule.num_stages):
        clients = []
        for client in range(config.num_clients):
            drawn = samples(stage, client)
            clients.append(
                {
                    "client": client,
                    "tasks": list(schedule.client_tasks(stage, client)),
                    **answer_summary([s.answer for s in drawn]),
                }
            )
        sizes = [c["samples"] for c in clients]
        stages.append(
            {"stage": stage + 1, "size_gini": size_gini(sizes), "clients": clients}
        )
    return {
        "partition": config.partition,
        "beta": config.beta,
        "seed": config.seed,
        "stages": stages,
    }

"""Where a run's data comes from: the data root, the stage units, client partitions.

Nothing here knows about Flower or models; the ClientApp asks for its own partition
(:func:`client_samples`), the ServerApp for test sets (:func:`test_samples`).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
from datasets import Dataset
from flwr_datasets.partitioner import SizePartitioner

from fcit_flower.config import RunConfig
from fcit_flower.models.tiny import default_cache_dir
from fcit_flower.tasks.catalog import CAPABILITY_GROUPS, TASK_ORDER, get_task
from fcit_flower.tasks.fcit_data import Sample, load_split
from fcit_flower.tasks.mini_fcit import build_mini_fcit
from fcit_flower.tasks.partition import dirichlet_sizes
from fcit_flower.tasks.schedule import Schedule, build_schedule
from fcit_flower.tasks.schedule_file import load_schedule_file

MINI_FCIT_IMAGE_SIZE = 32


def data_root(config: RunConfig) -> Path:
    """The configured data root, building the embedded mini-FCIT when it is empty."""
    if config.data_root:
        return Path(config.data_root).expanduser().resolve()
    root = default_cache_dir() / (
        f"mini-fcit-d{config.data_seed}-n{config.train_size}-t{config.test_size}"
    )
    return build_mini_fcit(
        root,
        seed=config.data_seed,
        train_size=config.train_size,
        test_size=config.test_size,
        image_size=MINI_FCIT_IMAGE_SIZE,
    )


def stage_units(setting: str) -> list[list[str]]:
    """Base stage order: one task per stage, or one capability group per stage."""
    if setting == "task":
        return [[t] for t in TASK_ORDER]
    return [list(tasks) for tasks in CAPABILITY_GROUPS.values()]


def make_schedule(config: RunConfig) -> Schedule:
    """The run's schedule (first num-stages).

    From ``schedule-file`` when set (scenario and setting are then ignored),
    otherwise from the scenario, setting and seed.
    """
    if config.schedule_file:
        root = Path(config.data_root).expanduser() if config.data_root else None
        schedule = load_schedule_file(
            Path(config.schedule_file).expanduser(),
            config.num_clients,
            lambda name: get_task(name, root).name,
        )
        if config.num_stages:
            table = schedule.assignments[: config.num_stages]
            tasks = [t for t in schedule.tasks if any(t in u for s in table for u in s)]
            schedule = Schedule(assignments=table, tasks=tuple(tasks))
        return schedule
    units = stage_units(config.setting)
    if config.num_stages:
        units = units[: config.num_stages]
    return build_schedule(
        units,
        scenario=config.scenario,
        num_clients=config.num_clients,
        seed=config.seed,
    )


@lru_cache(maxsize=64)
def load_task(root: str, task: str, split: str) -> tuple[Sample, ...]:
    """One task split, read once per process."""
    return tuple(load_split(Path(root), task, split))  # type: ignore[arg-type]


def vocabulary_texts(root: Path, tasks: tuple[str, ...]) -> list[str]:
    """Every instruction and answer of ``tasks`` (the tiny tokenizer's corpus)."""
    texts: set[str] = set()
    for task in tasks:
        for split in ("train", "test"):
            for sample in load_task(str(root), task, split):
                texts.add(sample.question)
                texts.add(sample.answer)
    return sorted(texts)


def client_samples(
    config: RunConfig, schedule: Schedule, root: Path, stage: int, client: int
) -> list[Sample]:
    """The training samples of ``client`` at ``stage``.

    The stage's data of a task unit (pooled and shuffled for capability groups) is
    split over the clients that learn that unit, with Dirichlet(beta) sizes
    (flwr-datasets' ``SizePartitioner``). Seeded by run seed and stage.
    """
    unit = schedule.client_tasks(stage, client)
    peers = [c for c, u in enumerate(schedule.assignments[stage]) if u == unit]
    pool = [s for task in unit for s in load_task(str(root), task, "train")]
    seed = stable_seed(config.seed, stage, *unit)
    order = np.random.default_rng(seed).permutation(len(pool))
    sizes = dirichlet_sizes(
        len(pool), len(peers), config.beta, seed=seed, min_size=config.min_client_size
    )
    partitioner = SizePartitioner(partition_sizes=sizes)
    partitioner.dataset = Dataset.from_dict({"index": order.tolist()})
    indices = partitioner.load_partition(peers.index(client))["index"]
    return [pool[i] for i in indices]


def test_samples(root: Path, task: str) -> list[Sample]:
    """The fixed test set of ``task``."""
    return list(load_task(str(root), task, "test"))


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

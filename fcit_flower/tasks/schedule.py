"""Stage tables: which tasks each client position learns at each stage (pure).

- Hom-FCIT: every client learns the stage's task(s).
- Het-FCIT: client positions are split into ``num_orders`` groups; group ``g`` follows
  the base order rotated by ``g * len(order) // num_orders`` stages, so the clients of
  one stage learn different tasks while every client sees every task once. Which
  positions fall in which group is a seeded shuffle.
- Task setting: one task per stage (8 stages); capability setting: one capability
  group (several datasets, pooled) per stage (4 stages).
- A schedule file (``schedule-file``) gives the table directly
  (:mod:`fcit_flower.tasks.schedule_file`).
- The multi-task reference learns every task in every stage (:func:`mtl_schedule`).

Every schedule of a run is built here (:func:`make_schedule`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fcit_flower.config import SCENARIOS, RunConfig
from fcit_flower.tasks.catalog import CAPABILITY_GROUPS, TASK_ORDER, get_task
from fcit_flower.tasks.schedule_file import StageRow, read_schedule_file


@dataclass(frozen=True)
class Schedule:
    """A continual schedule.

    Attributes
    ----------
    assignments : tuple of tuple of tuple of str
        ``assignments[stage][client]``: the tasks that client learns in that stage.
    tasks : tuple of str
        Evaluation columns: every task of the schedule, in order of first use.
    """

    assignments: tuple[tuple[tuple[str, ...], ...], ...]
    tasks: tuple[str, ...]

    @property
    def num_stages(self) -> int:
        """Number of stages."""
        return len(self.assignments)

    def client_tasks(self, stage: int, client: int) -> tuple[str, ...]:
        """Tasks of ``client`` at ``stage``."""
        return self.assignments[stage][client]

    def seen_columns(self) -> list[list[int]]:
        """Per stage, the task columns learned by anyone up to that stage."""
        seen: set[str] = set()
        out = []
        for stage in self.assignments:
            seen.update(t for tasks in stage for t in tasks)
            out.append([j for j, t in enumerate(self.tasks) if t in seen])
        return out

    def learned_at(self) -> list[int]:
        """Per task column, the last stage at which any client learned it."""
        last = {
            t: s for s, stage in enumerate(self.assignments) for ts in stage for t in ts
        }
        return [last[t] for t in self.tasks]


def _rotations(num_clients: int, num_orders: int, seed: int) -> list[int]:
    groups = np.arange(num_clients) % num_orders
    np.random.default_rng(seed).shuffle(groups)
    return [int(g) for g in groups]


def build_schedule(
    stage_units: Sequence[Sequence[str]],
    *,
    scenario: str,
    num_clients: int,
    seed: int,
    num_orders: int = 4,
) -> Schedule:
    """Build a Hom or Het schedule from an ordered list of stage units.

    Parameters
    ----------
    stage_units : sequence of sequences of str
        Base order; each unit is the task(s) of one stage (one task in the task
        setting, a capability group in the capability setting).
    scenario : {"hom", "het"}
        Whether all clients of a stage learn the same unit.
    num_clients : int
        Client positions.
    seed : int
        Seeds the Het position-to-order assignment.
    num_orders : int
        Distinct task orders in Het (capped at the number of stages).
    """
    if scenario not in SCENARIOS:
        raise ValueError(f"scenario must be one of {SCENARIOS}, got {scenario!r}")
    units = [tuple(u) for u in stage_units]
    stages = len(units)
    if scenario == "hom":
        return from_table(
            [tuple(units[s] for _ in range(num_clients)) for s in range(stages)]
        )
    orders = min(num_orders, stages)
    shift = stages // orders
    group = _rotations(num_clients, orders, seed)
    return from_table(
        [
            tuple(units[(s + group[c] * shift) % stages] for c in range(num_clients))
            for s in range(stages)
        ]
    )


def from_table(table: Sequence[StageRow]) -> Schedule:
    """The schedule of a stage table; its task columns in order of first use."""
    columns: list[str] = []
    for stage in table:
        for tasks in stage:
            columns.extend(t for t in tasks if t not in columns)
    return Schedule(assignments=tuple(table), tasks=tuple(columns))


def stage_units(setting: str) -> list[list[str]]:
    """Base stage order: one task per stage, or one capability group per stage."""
    if setting == "task":
        return [[t] for t in TASK_ORDER]
    return [list(tasks) for tasks in CAPABILITY_GROUPS.values()]


def make_schedule(config: RunConfig) -> Schedule:
    """The run's continual schedule (its first ``num-stages`` stages).

    From ``schedule-file`` when set (scenario and setting are then ignored),
    otherwise from the scenario, setting and seed.
    """
    if config.schedule_file:
        root = Path(config.data_root).expanduser() if config.data_root else None
        table = read_schedule_file(
            Path(config.schedule_file).expanduser(),
            config.num_clients,
            lambda name: get_task(name, root).name,
        )
        return from_table(table[: config.num_stages or None])
    units = stage_units(config.setting)
    if config.num_stages:
        units = units[: config.num_stages]
    return build_schedule(
        units,
        scenario=config.scenario,
        num_clients=config.num_clients,
        seed=config.seed,
    )


def mtl_schedule(schedule: Schedule) -> Schedule:
    """The multi-task reference of ``schedule``: every stage learns every task.

    Same number of stages and clients and the same task columns, so the run takes
    the same rounds as a Hom continual run (the data split is
    :func:`fcit_flower.tasks.data.pooled_client_samples`).
    """
    clients = len(schedule.assignments[0])
    stage = tuple(schedule.tasks for _ in range(clients))
    return Schedule(
        assignments=tuple(stage for _ in range(schedule.num_stages)),
        tasks=schedule.tasks,
    )


def describe(schedule: Schedule) -> str:
    """Human-readable table of the schedule (printed at the start of a run)."""
    lines = []
    for s, stage in enumerate(schedule.assignments):
        distinct: dict[tuple[str, ...], list[int]] = {}
        for client, tasks in enumerate(stage):
            distinct.setdefault(tasks, []).append(client)
        parts = [f"{'+'.join(t)} <- clients {c}" for t, c in distinct.items()]
        lines.append(f"stage {s + 1}: " + "; ".join(parts))
    return "\n".join(lines)

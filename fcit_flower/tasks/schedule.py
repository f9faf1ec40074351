"""Stage tables: which tasks each client position learns at each stage (pure).

- Hom-FCIT: every client learns the stage's task(s).
- Het-FCIT: client positions are split into ``num_orders`` groups; group ``g`` follows
  the base order rotated by ``g * len(order) // num_orders`` stages, so the clients of
  one stage learn different tasks while every client sees every task once. Which
  positions fall in which group is a seeded shuffle.
- Task setting: one task per stage (8 stages); capability setting: one capability
  group (several datasets, pooled) per stage (4 stages).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

SCENARIOS = ("hom", "het")
SETTINGS = ("task", "capability")


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
        table = tuple(
            tuple(units[s] for _ in range(num_clients)) for s in range(stages)
        )
    else:
        orders = min(num_orders, stages)
        shift = stages // orders
        group = _rotations(num_clients, orders, seed)
        table = tuple(
            tuple(units[(s + group[c] * shift) % stages] for c in range(num_clients))
            for s in range(stages)
        )
    columns: list[str] = []
    for stage in table:
        for tasks in stage:
            columns.extend(t for t in tasks if t not in columns)
    return Schedule(assignments=table, tasks=tuple(columns))


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

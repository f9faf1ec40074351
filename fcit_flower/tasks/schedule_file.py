"""Custom schedules from a TOML or JSON file (the ``schedule-file`` run-config key).

A file lists the stages in order; each stage either gives the tasks every client
learns, or splits the clients into groups with their own tasks::

    # TOML
    [[stage]]
    tasks = ["imagenet-r"]            # every client

    [[stage]]
    [[stage.group]]
    tasks = ["arxivqa"]
    clients = [0, 1, 2, "3-4"]        # positions or inclusive "a-b" ranges
    [[stage.group]]
    tasks = ["iconqa", "clevr-math"]  # several tasks: pooled, as a capability group
    clients = "rest"                  # every client not named in this stage

JSON: ``{"stage": [{"tasks": [...]}, {"group": [{"tasks": [...], "clients":
[...]}]}]}``. Every client must learn something in every stage, and exactly one
group per stage may use ``"rest"``. Task names are catalog names or FCIT names
(``ImageNet-R``), or datasets declared under the data root (``task.json``).
Errors name the file, the stage and the field.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

# One stage: the tasks of each client position.
StageRow = tuple[tuple[str, ...], ...]


class ScheduleFileError(ValueError):
    """A schedule file is malformed; the message names file, stage and field."""


def read_schedule_file(
    path: Path, num_clients: int, resolve_task: Callable[[str], str]
) -> list[StageRow]:
    """Read and validate a schedule file: per stage, each client's tasks.

    :func:`fcit_flower.tasks.schedule.make_schedule` turns the table into a
    schedule.

    Parameters
    ----------
    path : Path
        ``.toml`` or ``.json`` file.
    num_clients : int
        Client positions ``0..num_clients-1``; each must be assigned every stage.
    resolve_task : callable
        Maps a task name to its canonical name; raises ``ValueError`` when unknown.

    Raises
    ------
    ScheduleFileError
        Unreadable file, bad structure, unknown task, unassigned or repeated client.
    """
    data = _read(path)
    stages = data.get("stage") if isinstance(data, dict) else None
    if not isinstance(stages, list) or not stages:
        raise ScheduleFileError(f"{path}: needs a non-empty list 'stage'")
    table = []
    for number, stage in enumerate(stages, start=1):
        where = f"{path}: stage {number}"
        table.append(_stage(where, stage, num_clients, resolve_task))
    return table


def _read(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ScheduleFileError(f"{path}: cannot read ({error.strerror})") from None
    except UnicodeDecodeError as error:
        raise ScheduleFileError(
            f"{path}: not UTF-8 text (byte {error.start}: {error.reason})"
        ) from None
    try:
        if path.suffix == ".toml":
            return tomllib.loads(text)
        return json.loads(text)
    except RecursionError:
        raise ScheduleFileError(f"{path}: nested too deeply") from None
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as error:
        raise ScheduleFileError(
            f"{path}: malformed {path.suffix[1:]}: {error}"
        ) from None


def _tasks(where: str, value: Any, resolve: Callable[[str], str]) -> tuple[str, ...]:
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(t, str) for t in value)
    ):
        raise ScheduleFileError(f"{where}: 'tasks' must be a non-empty list of names")
    out = []
    for name in value:
        try:
            canonical = resolve(name)
        except ValueError as error:
            raise ScheduleFileError(f"{where}: 'tasks': {error}") from None
        if canonical in out:
            raise ScheduleFileError(f"{where}: 'tasks' repeats {name!r}")
        out.append(canonical)
    return tuple(out)


def _clients(where: str, value: Any, num_clients: int) -> list[int]:
    if not isinstance(value, list) or not value:
        raise ScheduleFileError(
            f"{where}: 'clients' must be a non-empty list or \"rest\""
        )
    out: list[int] = []
    for item in value:
        if isinstance(item, int) and not isinstance(item, bool):
            out.append(item)
        elif isinstance(item, str) and item.count("-") == 1:
            low, high = item.split("-")
            if not (low.strip().isdigit() and high.strip().isdigit()):
                raise ScheduleFileError(f"{where}: 'clients': bad range {item!r}")
            out.extend(range(int(low), int(high) + 1))
        else:
            raise ScheduleFileError(
                f"{where}: 'clients': {item!r} is not a position or an 'a-b' range"
            )
    for client in out:
        if not 0 <= client < num_clients:
            raise ScheduleFileError(
                f"{where}: 'clients': {client} is out of range 0..{num_clients - 1}"
            )
    return out


def _stage(
    where: str, stage: Any, num_clients: int, resolve: Callable[[str], str]
) -> tuple[tuple[str, ...], ...]:
    if not isinstance(stage, dict):
        raise ScheduleFileError(f"{where}: must be a table/object")
    unknown = set(stage) - {"tasks", "group"}
    if unknown or ("tasks" in stage) == ("group" in stage):
        raise ScheduleFileError(
            f"{where}: give either 'tasks' or 'group' (found {sorted(stage)})"
        )
    if "tasks" in stage:
        tasks = _tasks(where, stage["tasks"], resolve)
        return tuple(tasks for _ in range(num_clients))
    groups = stage["group"]
    if not isinstance(groups, list) or not groups:
        raise ScheduleFileError(f"{where}: 'group' must be a non-empty list")
    assigned: dict[int, tuple[str, ...]] = {}
    rest: tuple[str, ...] | None = None
    for index, group in enumerate(groups, start=1):
        here = f"{where}: group {index}"
        if not isinstance(group, dict) or set(group) != {"tasks", "clients"}:
            raise ScheduleFileError(f"{here}: needs exactly 'tasks' and 'clients'")
        tasks = _tasks(here, group["tasks"], resolve)
        if group["clients"] == "rest":
            if rest is not None:
                raise ScheduleFileError(f"{here}: 'clients': \"rest\" used twice")
            rest = tasks
            continue
        for client in _clients(here, group["clients"], num_clients):
            if client in assigned:
                raise ScheduleFileError(
                    f"{here}: 'clients': client {client} is already assigned"
                )
            assigned[client] = tasks
    missing = [c for c in range(num_clients) if c not in assigned]
    if missing and rest is None:
        raise ScheduleFileError(
            f'{where}: clients {missing} learn nothing; assign them or use "rest"'
        )
    return tuple(assigned.get(c, rest) or () for c in range(num_clients))

"""Checks before launch: the results directory, the data, and guards switched off.

``fcit-flower compare`` and ``fcit-flower resume`` run them before any SuperLink or
Ray starts; the ServerApp runs the data check as its first step (for a plain
``flwr run .``). A failure is a :class:`~fcit_flower.config.ConfigError` or a
:class:`~fcit_flower.tasks.fcit_data.DataError` with one line naming the key, or the
file, record and field.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from fcit_flower.config import ConfigError, RunConfig


def check_results_dir(path: Path) -> None:
    """Create ``path`` if needed and check that files can be written in it.

    Raises
    ------
    ConfigError
        When ``path`` cannot be created (a file in the way, no permission) or is not
        writable.
    """
    path = Path(path).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ConfigError(
            f"results-dir {str(path)!r} is not a writable directory ({reason})"
        ) from None


def guard_warnings(config: RunConfig) -> list[str]:
    """One warning per upload guard that ``config`` switches off (threshold 0)."""
    warnings = []
    for key in ("max-update-norm", "max-token-norm"):
        if getattr(config, key.replace("-", "_")) == 0:
            warnings.append(
                f"{key}=0: this upload guard is OFF; poisoned uploads of that kind "
                "are aggregated"
            )
    return warnings


def check_data(config: RunConfig) -> Path:
    """Read every split a run needs and draw every client's share, once.

    Every referenced image is opened and decoded (bad records are skipped and
    counted within ``max-bad-fraction``); the schedule is built; every client of
    every stage must receive at least ``min-client-size`` samples.

    Parameters
    ----------
    config : RunConfig
        The run.

    Returns
    -------
    Path
        The data root (the mini-FCIT cache is built if needed).

    Raises
    ------
    DataError
        Missing or unreadable files, too many bad records, too few samples.
    """
    from fcit_flower.tasks.data import (  # datasets and PIL: only when checking
        client_samples,
        config_load_task,
        data_root,
        require_task_files,
    )
    from fcit_flower.tasks.fcit_data import DataError
    from fcit_flower.tasks.schedule import make_schedule

    try:
        schedule = make_schedule(config)
    except DataError:
        raise
    except ValueError as error:  # schedule file or task declaration
        raise DataError(str(error)) from None
    root = data_root(config)
    if config.data_root:
        require_task_files(root, schedule.tasks)
    for task in schedule.tasks:
        for split in dict.fromkeys(("train", config.eval_split)):
            config_load_task(config, root, task, split)
    for stage in range(schedule.num_stages):
        for client in range(config.num_clients):
            try:
                client_samples(config, schedule, root, stage, client)
            except DataError:
                raise
            except ValueError as error:
                raise DataError(
                    f"stage {stage + 1}, client {client}: {error}; lower "
                    "num-clients or min-client-size, or raise beta or the data"
                ) from None
    return root

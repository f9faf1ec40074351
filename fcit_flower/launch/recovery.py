"""What an earlier run left behind: its finished metrics, its resume point.

Read before anything starts, so that ``fcit-flower resume`` answers a finished run
without starting Flower, and ``compare --resume`` reuses complete runs. Damaged or
foreign files are treated as absent (or named in a one-line error), never a crash.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fcit_flower.checkpoint import (
    Checkpoint,
    CheckpointStore,
    config_differences,
    difference_details,
)
from fcit_flower.config import ConfigError, RunConfig

# Run-config keys read by one method only: a finished run of another method is
# reused whatever they say, so that changing, say, the MTL epochs does not
# recompute every Finetune and DISCO run.
METHOD_ONLY_KEYS: dict[str, str] = {
    "ewc-lambda": "ewc",
    "olora-lambda-orth": "olora",
    "olora-lambda-l2": "olora",
    "moelora-experts": "moelora",
    "moelora-top-k": "moelora",
    "mtl-epochs": "mtl",
}


def read_metrics(run_dir: Path) -> dict[str, Any] | None:
    """The ``metrics.json`` of ``run_dir`` as a dict, or ``None`` (absent, damaged)."""
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return metrics if isinstance(metrics, dict) else None


def resume_hint(config: RunConfig) -> str:
    """Whether the failed run can be resumed: it can only with a checkpoint."""
    store = CheckpointStore(config.run_dir / "checkpoints")
    if store.files():
        return (
            f"its last checkpoint can be resumed: fcit-flower resume {config.run_dir}"
        )
    return "it wrote no checkpoint, so it must be started again"


def finished_metrics(config: RunConfig) -> dict[str, Any] | None:
    """The metrics of a complete earlier run with the same config, else ``None``."""
    metrics = read_metrics(config.run_dir)
    if metrics is None or metrics.get("complete") is not True:
        return None
    saved = metrics.get("config")
    if not isinstance(saved, dict):
        return None
    # Keys newer than the run ran as their defaults (as for resume).
    saved = {**RunConfig().to_mapping(), **saved}
    differing = [
        key
        for key in config_differences(saved, config.to_mapping())
        if METHOD_ONLY_KEYS.get(key, config.method) == config.method
    ]
    if differing or _other_data(config):
        return None
    return metrics


def _other_data(config: RunConfig) -> bool:
    """Whether the run read another data root (e.g. an older mini-FCIT version)."""
    from fcit_flower.tasks.data import data_root_path

    try:
        manifest = json.loads((config.run_dir / "manifest.json").read_text())
        used = manifest["data_root"]
    except (OSError, ValueError, KeyError, TypeError):
        return False  # a run without a manifest is judged by its config alone
    return bool(used != str(data_root_path(config)))


def resume_point(
    run_dir: Path, overrides: Mapping[str, Any] | None = None
) -> tuple[RunConfig, Checkpoint]:
    """The config of the run in ``run_dir`` set to resume, and its newest checkpoint.

    Parameters
    ----------
    run_dir : Path
        The run's results directory.
    overrides : Mapping, optional
        Operational run-config keys to change (already checked by the caller).

    Raises
    ------
    ConfigError
        If ``run_dir`` is not a directory or holds no usable checkpoint.
    """
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir} is not a run directory")
    store = CheckpointStore(run_dir / "checkpoints")
    checkpoint = store.latest(warn=lambda message: print(message, file=sys.stderr))
    if checkpoint is None:
        raise ConfigError(
            f"{run_dir}: no usable checkpoint in {store.directory}, so there is "
            "nothing to resume; start the run again"
        )
    saved = checkpoint.meta.get("config")
    if not isinstance(saved, dict):
        raise ConfigError(f"checkpoint {checkpoint.path} holds no run-config")
    values = {
        **saved,
        **(overrides or {}),
        "resume": True,
        "results-dir": str(run_dir.resolve().parent),
        "run-name": run_dir.resolve().name,
    }
    return RunConfig.from_mapping(values), checkpoint


def completed_metrics(run_dir: Path, checkpoint: Checkpoint) -> dict[str, Any] | None:
    """The metrics of ``run_dir`` when ``checkpoint`` is the end of its last stage.

    ``None`` when anything is left to do: the newest checkpoint is a round one,
    ``metrics.json`` is missing or incomplete, or the two disagree on the stages.
    """
    if not checkpoint.path.name.endswith("-end.npz"):
        return None
    metrics = read_metrics(run_dir)
    if metrics is None or metrics.get("complete") is not True:
        return None
    progress = checkpoint.meta.get("progress")
    rows = metrics.get("accuracy_matrix")
    if not isinstance(progress, dict) or not isinstance(rows, list):
        return None
    return metrics if progress.get("stages_done") == len(rows) else None


def check_resumable(config: RunConfig) -> None:
    """Before launch: refuse to resume ``config`` from a checkpoint of another config.

    Raises
    ------
    ConfigError
        The latest usable checkpoint of the run was written with other values of
        keys that change results (named with both values).
    """
    checkpoint = CheckpointStore(config.run_dir / "checkpoints").latest()
    if checkpoint is None or finished_metrics(config) is not None:
        return
    details = difference_details(checkpoint.meta["config"], config.to_mapping())
    if details:
        raise ConfigError(
            f"cannot resume {config.run_dir}: its checkpoint {checkpoint.path.name} "
            f"has another run-config ({details}); use another --results-dir"
        )

"""Checks and coercion of single run-config values, each failing with one line.

:class:`ConfigError` names the key, the value and what is allowed; the checks that
involve several keys live in :class:`fcit_flower.config.RunConfig`.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

# A method or optimizer named by import path: dotted Python identifiers.
IMPORT_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


class ConfigError(ValueError):
    """A run-config key has a bad value."""


def require_cuda(what: str) -> None:
    """Raise :class:`ConfigError` when ``what`` asks for a GPU and none is visible."""
    import torch  # only when a GPU is asked for

    if not torch.cuda.is_available():
        raise ConfigError(
            f"{what} asks for a GPU, but no CUDA GPU is visible "
            f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}); "
            "use device='cpu' and client-resources-num-gpus=0"
        )


def checkpoint_dir(key: str, value: str, model_type: str | None, what: str) -> None:
    """Check that ``value`` is a local checkpoint directory (no hub downloads)."""
    if not value:
        raise ConfigError(f"{key} is empty; {what!r} loads from a local directory")
    path = Path(value).expanduser()
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ConfigError(
            f"{key}={value!r} is not a checkpoint directory (no config.json)"
        )
    if model_type is None:
        return
    try:
        found = json.loads(config_file.read_text()).get("model_type")
    except (OSError, ValueError) as error:
        message = f"{key}={value!r}: unreadable config.json ({error})"
        raise ConfigError(message) from None
    if found != model_type:
        raise ConfigError(
            f"{key}={value!r} holds model_type={found!r}, not a "
            f"{model_type!r} checkpoint"
        )


def choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    """``value`` must be one of ``allowed``."""
    if value not in allowed:
        raise ConfigError(
            f"{key}={value!r} is not allowed; choose one of {list(allowed)}"
        )


def name_or_path(key: str, value: str) -> None:
    """A registered name or an import path (checked against the registry later)."""
    if not IMPORT_PATH.fullmatch(value.replace("-", "_")):
        raise ConfigError(f"{key}={value!r} is not a name or an import path")


def positive(key: str, value: float) -> None:
    """``value`` must be > 0 (NaN fails too)."""
    if not value > 0:
        raise ConfigError(f"{key}={value} must be > 0")


def finite(key: str, value: float) -> None:
    """``value`` must be a finite number: NaN or inf would switch a check off."""
    if not math.isfinite(value):
        raise ConfigError(f"{key}={value} must be a finite number")


def non_negative(key: str, value: float) -> None:
    """``value`` must be >= 0 (NaN fails too)."""
    if not value >= 0:
        raise ConfigError(f"{key}={value} must be >= 0")


def coerce(key: str, value: Any, kind: type) -> Any:
    """``value`` as ``kind`` (bool, int, float or str), or a :class:`ConfigError`."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ConfigError(f"{key}={value!r} must be true or false")
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ConfigError(f"{key}={value!r} must be an integer")
        try:
            number = float(value)
        except (ValueError, OverflowError):
            raise ConfigError(f"{key}={value!r} must be an integer") from None
        if not number.is_integer():
            raise ConfigError(f"{key}={value!r} must be an integer")
        return int(number)
    if kind is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}={value!r} must be a number")
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(f"{key}={value!r} must be a number") from None
        finite(key, number)
        return number
    if not isinstance(value, str):
        raise ConfigError(f"{key}={value!r} must be a string")
    return value

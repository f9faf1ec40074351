"""Objects a run-config names by import path: a method, a server optimizer."""

from __future__ import annotations

import importlib
from typing import Any

from fcit_flower.config import ConfigError


def import_object(key: str, path: str) -> Any:
    """The object at ``path`` (``package.module.Name``); ``None`` if there is none.

    Raises
    ------
    ConfigError
        When the module cannot be imported (naming the run-config ``key``).
    """
    module, _, attribute = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attribute, None)
    except ImportError as error:
        raise ConfigError(f"{key}={path!r}: {error}") from None

"""Where fcit-flower caches what it builds once: mini-FCIT data and tiny bases."""

from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> Path:
    """``$FCIT_CACHE`` or ``~/.cache/fcit-flower``."""
    return Path(os.environ.get("FCIT_CACHE", Path.home() / ".cache" / "fcit-flower"))

"""What the ServerApp and the ClientApps derive from a RunConfig, once per process.

Both sides derive the same data root, schedule and base model from the same config,
so nothing but adapter tensors, configs and metrics travels in messages.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from fcit_flower.config import RunConfig
from fcit_flower.models.adapters import BaseBundle, load_base
from fcit_flower.models.tiny import ensure_tiny_base
from fcit_flower.tasks.catalog import TASKS
from fcit_flower.tasks.data import data_root, make_schedule, vocabulary_texts
from fcit_flower.tasks.mini_fcit import vocabulary_texts as mini_fcit_vocabulary
from fcit_flower.tasks.schedule import Schedule


@dataclass(frozen=True)
class Runtime:
    """Derived, per-process state of a run.

    Attributes
    ----------
    root : Path
        Data root (mini-FCIT cache or the user's FCIT directory).
    schedule : Schedule
        Which tasks each client learns per stage.
    base_path : str
        Directory of the base model.
    bundle : BaseBundle
        The loaded base model and its tokenizer.
    """

    root: Path
    schedule: Schedule
    base_path: str
    bundle: BaseBundle


@lru_cache(maxsize=4)
def prepare_runtime(config: RunConfig) -> Runtime:
    """Build (or reuse) the data and the base model for ``config``."""
    root = data_root(config)
    schedule = make_schedule(config)
    if config.data_root:
        texts = vocabulary_texts(root, tuple(t for t in TASKS if (root / t).is_dir()))
    else:
        texts = mini_fcit_vocabulary()
    base_path = str(ensure_tiny_base(texts))
    return Runtime(root, schedule, base_path, load_base(base_path))

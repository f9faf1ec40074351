"""What the ServerApp and the ClientApps derive from a RunConfig, once per process.

Both sides derive the same data root, schedule and base model from the same config,
so nothing but adapter tensors, configs and metrics travels in messages.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from fcit_flower.config import RunConfig
from fcit_flower.cpu_kernels import unpinned_warning
from fcit_flower.models.adapters import BaseBundle, load_base, register_base
from fcit_flower.models.identity import combine_features, get_encoder, image_features
from fcit_flower.models.llava import LoadOptions
from fcit_flower.models.tiny import ensure_tiny_base
from fcit_flower.tasks.data import data_root, require_task_files
from fcit_flower.tasks.fcit_data import Sample
from fcit_flower.tasks.schedule import Schedule, make_schedule
from fcit_flower.training import load_pixels

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Runtime:
    """Derived, per-process state of a run.

    Attributes
    ----------
    root : Path
        Data root (mini-FCIT cache or the user's FCIT directory).
    schedule : Schedule
        Which tasks each client learns per stage (the continual schedule; a
        method may derive its own from it, as the multi-task reference does).
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
def prepare_runtime(
    config: RunConfig, required: tuple[str, ...] = ("train", "test")
) -> Runtime:
    """Build (or reuse) the data and the base model for ``config``.

    ``required``: the splits every task of the schedule must have under a given
    ``data-root`` (a site with its own data checks its own tasks instead: none).
    """
    root = data_root(config)
    schedule = make_schedule(config)
    if config.data_root and required:
        require_task_files(root, schedule.tasks, required)
    base_path = base_model_path(config)
    register_base(base_path, LoadOptions.from_config(config))
    return Runtime(root, schedule, base_path, load_base(base_path))


def base_model_path(config: RunConfig) -> str:
    """Where the base of ``config.model`` lives: the one place the model is chosen.

    ``tiny``: the pre-trained tiny base (built once, cached, the same whatever the
    data: its byte-level tokenizer encodes any text); a LLaVA checkpoint (``llava``,
    ``llava-1.5-7b``): ``model-path`` as given (validated by the config).
    """
    if config.model != "tiny":
        return str(Path(config.model_path).expanduser().resolve())
    import torch

    # A CPU run on other kernels than the pinned ones gives other numbers.
    warning = unpinned_warning(torch.backends.cpu.get_cpu_capability())
    if warning and config.device == "cpu":
        log.warning("%s", warning)
    return str(ensure_tiny_base())


def built_base_path(config: RunConfig) -> str | None:
    """:func:`base_model_path` if that base exists here, without building it."""
    from fcit_flower.models.tiny import built_tiny_base

    if config.model != "tiny":
        path = Path(config.model_path).expanduser().resolve()
        return str(path) if (path / "config.json").is_file() else None
    built = built_tiny_base()
    return None if built is None else str(built)


def identity_encoder(config: RunConfig) -> Any:
    """The (cached) identity encoder of ``config``."""
    return get_encoder(config.identity_encoder, config.identity_encoder_path)


def sample_features(
    config: RunConfig, runtime: Runtime, samples: Sequence[Sample]
) -> np.ndarray:
    """Identity features of ``samples`` for ``config.token_source``.

    Text: the frozen sentence encoder on the instruction; image: the frozen vision
    tower of the base (mean-pooled); text+image: both, unit-normalised, concatenated.
    """
    source = config.token_source
    text = (
        identity_encoder(config).encode([s.question for s in samples])
        if source in ("text", "text+image")
        else None
    )
    image = None
    if source in ("image", "text+image"):
        bundle = runtime.bundle
        pixels = load_pixels(
            samples, bundle.image_size, bundle.image_mean, bundle.image_std
        )
        model: Any = runtime.bundle.model
        image = image_features(model.model.vision_tower, pixels)
    return combine_features(source, text, image)


def token_dimension(config: RunConfig, runtime: Runtime) -> int:
    """Dimension of identity tokens for ``config.token_source``."""
    text = identity_encoder(config).dimension
    model: Any = runtime.bundle.model
    vision = model.config.vision_config
    image = int(vision.hidden_size)
    return {"text": text, "image": image, "text+image": text + image}[
        config.token_source
    ]

"""Adapter files of an export: stock PEFT adapters, plain arrays, DISCO's router.

A PEFT adapter is written as ``PeftModel.save_pretrained`` writes it, without
building a second model: PEFT's own :class:`~peft.LoraConfig` writes
``adapter_config.json`` and ``safetensors`` writes ``adapter_model.safetensors``
with PEFT's saved key names (``base_model.model.<module>.lora_A.weight``; a trained
projector under ``modules_to_save``). ``tests/test_export.py`` checks both files
against PEFT's own ``save_pretrained`` and loads them with
``PeftModel.from_pretrained``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.numpy
import safetensors.torch
import torch
from transformers import LlavaForConditionalGeneration

from fcit_flower.export.layout import ExportError, read_json, write_json
from fcit_flower.models.adapters import PEFT_PREFIX, lora_config
from fcit_flower.protocol import PROJECTOR, Arrays, split_projector

PEFT_WEIGHTS = "adapter_model.safetensors"
PEFT_CONFIG = "adapter_config.json"
ARRAYS = "arrays"  # arrays.safetensors + arrays.json
ROUTER_FILE = "router.safetensors"
ROUTER_JSON = "router.json"
ROUTER_TOKENS = "identity_tokens"
PROJECTOR_MODULE = PROJECTOR  # the name modules_to_save takes


def save_peft_adapter(
    folder: Path,
    arrays: Mapping[str, np.ndarray],
    *,
    rank: int,
    scaling: float,
    dropout: float,
    base_name: str,
) -> None:
    """Write ``arrays`` (canonical LoRA keys, optional projector) as a PEFT adapter.

    Parameters
    ----------
    folder : Path
        Created if needed; receives ``adapter_config.json`` and
        ``adapter_model.safetensors``.
    arrays : Mapping
        LoRA factors under canonical keys (:func:`~fcit_flower.models.adapters.
        lora_state`), plus the projector when it was trained.
    rank, scaling, dropout : int, float, float
        The adapter's LoRA config (``lora_alpha = scaling * rank``, as in training).
    base_name : str
        ``base_model_name_or_path`` of the config.
    """
    lora, projector = split_projector(arrays)
    config = lora_config(rank, scaling, dropout)
    config.base_model_name_or_path = base_name
    config.inference_mode = True  # as PeftModel.save_pretrained writes it
    if projector:
        config.modules_to_save = [PROJECTOR_MODULE]
    folder.mkdir(parents=True, exist_ok=True)
    # What PeftModel.save_pretrained adds for a config without task type: the
    # base class, for PEFT's AutoPeftModel.
    base_class = LlavaForConditionalGeneration
    auto_mapping = {
        "base_model_class": base_class.__name__,
        "parent_library": base_class.__module__,
    }
    config.save_pretrained(str(folder), auto_mapping_dict=auto_mapping)
    tensors = {
        PEFT_PREFIX + key: torch.from_numpy(np.ascontiguousarray(value))
        for key, value in sorted({**lora, **projector}.items())
    }
    safetensors.torch.save_file(
        tensors, str(folder / PEFT_WEIGHTS), metadata={"format": "pt"}
    )


def read_peft_adapter(folder: Path) -> Arrays:
    """The arrays of a PEFT adapter folder under canonical keys.

    Raises
    ------
    ExportError
        When the folder lacks the adapter's files.
    """
    path = folder / PEFT_WEIGHTS
    if not path.is_file() or not (folder / PEFT_CONFIG).is_file():
        raise ExportError(f"{folder}: no PEFT adapter ({PEFT_CONFIG}, {PEFT_WEIGHTS})")
    return {
        key.removeprefix(PEFT_PREFIX): value
        for key, value in safetensors.numpy.load_file(str(path)).items()
    }


def peft_rank(folder: Path) -> int:
    """The rank ``r`` an adapter folder's ``adapter_config.json`` declares."""
    return int(read_json(folder / PEFT_CONFIG)["r"])


def save_arrays(
    folder: Path,
    arrays: Mapping[str, np.ndarray],
    layout: Mapping[str, Any],
    *,
    name: str = ARRAYS,
) -> None:
    """``<name>.safetensors`` (keys as the run holds them) and ``<name>.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    safetensors.numpy.save_file(
        {k: np.ascontiguousarray(v) for k, v in sorted(arrays.items())},
        str(folder / f"{name}.safetensors"),
    )
    write_json(folder / f"{name}.json", dict(layout))


def read_arrays(folder: Path, *, name: str = ARRAYS) -> Arrays:
    """The arrays of :func:`save_arrays`."""
    path = folder / f"{name}.safetensors"
    if not path.is_file():
        raise ExportError(f"{folder}: no {path.name}")
    return dict(safetensors.numpy.load_file(str(path)))


def save_router(
    folder: Path, tokens: Sequence[np.ndarray], info: Mapping[str, Any]
) -> None:
    """DISCO's router: identity tokens (one row per slot) and their settings."""
    stacked = (
        np.stack([np.asarray(t, dtype=np.float32) for t in tokens])
        if tokens
        else np.zeros((0, 0), dtype=np.float32)
    )
    safetensors.numpy.save_file({ROUTER_TOKENS: stacked}, str(folder / ROUTER_FILE))
    write_json(folder / ROUTER_JSON, dict(info))


def read_router(folder: Path) -> tuple[np.ndarray, dict[str, Any]]:
    """The identity tokens ``(slots, d)`` and ``router.json`` of a DISCO export."""
    path = folder / ROUTER_FILE
    if not path.is_file():
        raise ExportError(f"{folder}: no {ROUTER_FILE}")
    tokens = safetensors.numpy.load_file(str(path))[ROUTER_TOKENS]
    return tokens, read_json(folder / ROUTER_JSON)

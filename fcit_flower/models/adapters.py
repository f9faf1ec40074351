"""Base-model loading (cached per process) and the adapter tensors that travel.

One set of base weights per process: every adapted model a method builds (the PEFT
model, the subspace / block model, the MoE-LoRA model) is a :func:`shared_copy` of
the cached base, new modules around the base's own parameters, buffers and 4-bit
quantization states. Only the injected adapters and the projector (small, and
trained by some runs) belong to each model.

Only adapter tensors (LoRA factors) and, when trained, the multimodal projector travel
in Flower messages; base weights never do. Keys are the module paths of the LLaVA
model, e.g. ``model.language_model.layers.0.mlp.gate_proj.lora_A.weight`` and
``model.multi_modal_projector.linear_1.weight``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from peft import (
    LoraConfig,
    get_peft_model,
    get_peft_model_state_dict,
    set_peft_model_state_dict,
)
from torch import nn

from fcit_flower.models.llava import LoadOptions, load_llava
from fcit_flower.models.subspace_lora import inject_subspace_lora
from fcit_flower.models.tiny import load_tiny_base
from fcit_flower.prompting import PromptTokenizer
from fcit_flower.protocol import PROJECTOR

LORA_TARGETS = ("gate_proj", "up_proj", "down_proj")
PEFT_PREFIX = "base_model.model."  # PEFT's parameter names -> our canonical keys


@dataclass(frozen=True)
class BaseBundle:
    """A loaded base model with what is needed to feed it.

    Attributes
    ----------
    model : nn.Module
        The frozen base (never modified; adapt a :func:`shared_copy`).
    tokenizer : PromptTokenizer
        Its tokenizer (the tiny word tokenizer or a wrapped transformers one).
    image_size : int
        Side of the square input images.
    num_image_tokens : int
        ``<image>`` placeholders per image.
    image_mean, image_std : tuple of float
        Per-channel pixel normalisation (the tiny model: 0.5, i.e. [-1, 1]).
    """

    model: nn.Module
    tokenizer: PromptTokenizer
    image_size: int
    num_image_tokens: int
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)


# How each base path is loaded (set once per process by prepare_runtime).
_LOAD_OPTIONS: dict[str, LoadOptions] = {}


def register_base(path: str, options: LoadOptions) -> None:
    """Declare how :func:`load_base` loads ``path`` in this process.

    Raises
    ------
    ValueError
        If ``path`` was registered with other options (the caches key on the path).
    """
    known = _LOAD_OPTIONS.setdefault(path, options)
    if known != options:
        raise ValueError(
            f"base {path!r} is already loaded with {known}; one process serves one "
            "set of load options per path"
        )


def forget_bases() -> None:
    """Drop every loaded base, its model copies and load options.

    For a site worker starting a new run: it may load a base with other options.
    """
    _LOAD_OPTIONS.clear()
    for cached in (load_base, adapted_model, subspace_model):
        cached.cache_clear()


@lru_cache(maxsize=2)
def load_base(path: str) -> BaseBundle:
    """Load the base at ``path`` once per process (tiny or a LLaVA checkpoint)."""
    options = _LOAD_OPTIONS.get(path, LoadOptions())
    if options.model != "tiny":
        parts = load_llava(path, options)
        return BaseBundle(
            parts.model,
            parts.tokenizer,
            parts.image_size,
            parts.num_image_tokens,
            parts.image_mean,
            parts.image_std,
        )
    model, tokenizer = load_tiny_base(Path(path))
    nn.Module.to(model, options.device)
    for param in model.parameters():
        param.requires_grad_(False)
    vision: Any = model.config.vision_config
    tokens = (vision.image_size // vision.patch_size) ** 2
    return BaseBundle(model, tokenizer, vision.image_size, tokens)


def shared_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` that holds no base weights of its own.

    Every module is new (adapters a method injects, train / eval flags and hooks
    stay per copy), but every parameter, buffer and bitsandbytes quantization state
    outside the projector is ``model``'s own object: a process that builds several
    adapted models holds the base weights once. The projector is copied (~0.1 GB
    in float32 at 7B): a run may train it, and the base's projector stays the
    untrained reference (:func:`projector_state` of the base). A 4-bit weight's
    CPU inference packing is then shared too; ``train_local`` undoes it before
    every training (:func:`~fcit_flower.models.llava.restore_4bit_training_layout`).

    Parameters
    ----------
    model : nn.Module
        The frozen base (:attr:`BaseBundle.model`).

    Returns
    -------
    nn.Module
        The copy; its frozen tensors are ``model``'s.
    """
    memo: dict[int, Any] = {}
    for name, module in model.named_modules():
        if PROJECTOR in name.split("."):
            continue  # copied: trained by some runs, see the docstring
        tensors = [*module._parameters.values(), *module._buffers.values()]
        # Plain attributes too: a 4-bit layer's quant_state (absmax, code) and
        # aliases of buffers (e.g. a rotary embedding's original_inv_freq).
        tensors += [
            value
            for value in vars(module).values()
            if isinstance(value, torch.Tensor) or type(value).__name__ == "QuantState"
        ]
        for tensor in tensors:
            if tensor is not None:
                memo[id(tensor)] = tensor
    # deepcopy returns what the memo holds for an object: the base's tensors.
    return copy.deepcopy(model, memo)


def lora_config(rank: int, scaling: float, dropout: float) -> LoraConfig:
    """PEFT LoRA on the language model's MLP projections only.

    ``lora_alpha = scaling * rank`` so that a subspace of rank ``r / E`` keeps the
    output scale ``alpha / r`` of the full adapter.
    """
    return LoraConfig(
        r=rank,
        lora_alpha=scaling * rank,  # type: ignore[arg-type]  # floats work
        lora_dropout=dropout,
        target_modules=r".*language_model.*\.(gate_proj|up_proj|down_proj)",
        bias="none",
    )


@lru_cache(maxsize=4)
def subspace_model(
    path: str, capacity: int, rank: int, scaling: float, dropout: float = 0.0
) -> nn.Module:
    """A copy of the base with ``capacity`` LoRA subspaces per adapted layer (cached).

    DISCO's inference model and O-LoRA / M-LoRA's blocks. Callers overwrite every
    subspace (:func:`~fcit_flower.models.subspace_lora.load_slots`) before each use.
    """
    inject = partial(
        inject_subspace_lora,
        num_subspaces=capacity,
        rank=rank,
        scaling=scaling,
        dropout=dropout,
    )
    return injected_copy(path, inject)


def injected_copy(
    path: str, inject: Callable[[nn.Module, tuple[str, ...]], object]
) -> nn.Module:
    """An eval-mode copy of the base at ``path``, adapted in place by ``inject``.

    Parameters
    ----------
    path : str
        The base model (:func:`load_base`).
    inject : callable
        ``inject(model, targets)`` wraps the layers named ``targets``
        (:data:`LORA_TARGETS`), e.g. a partial :func:`inject_subspace_lora`.

    Returns
    -------
    nn.Module
        The copy (:func:`shared_copy`: the base's weights, its own adapters); the
        base itself is never modified.
    """
    model = shared_copy(load_base(path).model)
    inject(model, LORA_TARGETS)
    model.eval()
    return model


@lru_cache(maxsize=4)
def adapted_model(path: str, rank: int, scaling: float, dropout: float) -> nn.Module:
    """A PEFT-wrapped copy of the base, cached per process and reused per message.

    The copy shares the base's weights (:func:`shared_copy`). Callers overwrite its
    adapter and projector state before each use.
    """
    base = load_base(path).model
    model = get_peft_model(shared_copy(base), lora_config(rank, scaling, dropout))
    model.eval()
    return model


def lora_shapes(
    path: str, rank: int, scaling: float, dropout: float
) -> dict[str, tuple[int, ...]]:
    """Keys and shapes of a rank-``rank`` PEFT adapter on the base at ``path``."""
    model = adapted_model(path, rank, scaling, dropout)
    return {k: v.shape for k, v in lora_state(model).items()}


def init_lora_arrays(
    shapes: dict[str, tuple[int, ...]], seed: int
) -> dict[str, np.ndarray]:
    """Fresh LoRA factors as PEFT initialises them, but seeded.

    ``lora_A`` ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (Kaiming-uniform with a=sqrt(5)),
    ``lora_B`` = 0, so a fresh adapter changes nothing.
    """
    rng = np.random.default_rng(seed)
    arrays = {}
    for key in sorted(shapes):
        shape = shapes[key]
        if ".lora_A." in key:
            bound = 1.0 / np.sqrt(shape[1])
            arrays[key] = rng.uniform(-bound, bound, size=shape).astype(np.float32)
        else:
            arrays[key] = np.zeros(shape, dtype=np.float32)
    return arrays


def lora_state(model: nn.Module) -> dict[str, np.ndarray]:
    """LoRA tensors of a PEFT model as float32 arrays under canonical keys."""
    state = get_peft_model_state_dict(model)
    return {
        k.removeprefix(PEFT_PREFIX): v.detach().cpu().float().numpy().copy()
        for k, v in state.items()
        if "lora_" in k
    }


def load_lora_state(model: nn.Module, arrays: dict[str, np.ndarray]) -> None:
    """Write canonical-key LoRA arrays into a PEFT model (strict on keys)."""
    state = {
        PEFT_PREFIX + k: torch.from_numpy(np.asarray(v)) for k, v in arrays.items()
    }
    result = set_peft_model_state_dict(model, state)
    unexpected = [k for k in getattr(result, "unexpected_keys", []) if "lora_" in k]
    if unexpected:
        raise KeyError(f"unknown adapter keys: {unexpected[:3]}")


def lora_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """PEFT LoRA parameters under the canonical keys of :func:`lora_state`."""
    return {
        name.removeprefix(PEFT_PREFIX).replace(".default.", "."): param
        for name, param in model.named_parameters()
        if "lora_" in name
    }


def _projector(model: nn.Module) -> nn.Module:
    for name, module in model.named_modules():
        if name.endswith(PROJECTOR):
            return module
    raise ValueError("model has no multi_modal_projector")


def projector_state(model: nn.Module) -> dict[str, np.ndarray]:
    """Projector weights as arrays under canonical keys."""
    return {
        f"model.{PROJECTOR}.{k}": v.detach().cpu().float().numpy().copy()
        for k, v in _projector(model).state_dict().items()
    }


def load_projector_state(model: nn.Module, arrays: dict[str, np.ndarray]) -> None:
    """Write projector arrays (canonical keys) into ``model``."""
    prefix = f"model.{PROJECTOR}."
    state = {
        k.removeprefix(prefix): torch.from_numpy(np.asarray(v))
        for k, v in arrays.items()
        if k.startswith(prefix)
    }
    _projector(model).load_state_dict(state, strict=True)


def trainable_param_groups(
    model: nn.Module, *, lr: float, projector_lr: float, train_projector: bool
) -> list[dict]:
    """Optimizer groups: LoRA factors at ``lr``, projector at ``projector_lr``."""
    lora = [p for n, p in model.named_parameters() if "lora_" in n]
    for param in lora:
        param.requires_grad_(True)
    groups: list[dict] = [{"params": lora, "lr": lr}]
    projector = list(_projector(model).parameters())
    for param in projector:
        param.requires_grad_(train_projector)
    if train_projector:
        groups.append({"params": projector, "lr": projector_lr})
    return groups

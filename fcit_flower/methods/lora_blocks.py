"""One LoRA block per stage (shared by O-LoRA and M-LoRA), and wrapped-model training.

Block ``k`` is a rank-``r_b`` LoRA pair trained in stage ``k`` and frozen afterwards.
The model holds ``capacity`` (= number of stages) blocks in one
:class:`~fcit_flower.models.subspace_lora.SubspaceLoraLinear` per adapted layer,
with every activation weight 1, so a layer computes

    y = W x + scaling * sum_k B_k A_k x

over the blocks trained so far (blocks not trained yet are zero). In stage ``s`` the
earlier blocks are present in the forward pass but frozen (their gradients are masked
to zero), and only block ``s`` travels: server -> client with all earlier blocks,
client -> server alone. Arrays of block ``k`` are keyed
``block{k}/<module>.lora_A.weight`` (shape ``(r_b, in)``) and
``block{k}/<module>.lora_B.weight`` (``(out, r_b)``).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache

import numpy as np
import torch
from torch import nn

from fcit_flower.config import RunConfig
from fcit_flower.models.adapters import (
    LORA_TARGETS,
    load_base,
    load_projector_state,
    projector_state,
    split_projector,
    trainable_param_groups,
)
from fcit_flower.models.subspace_lora import (
    SubspaceLoraLinear,
    inject_subspace_lora,
    set_activation,
    subspace_layers,
)
from fcit_flower.runtime import Runtime
from fcit_flower.tasks.fcit_data import Sample
from fcit_flower.training import train_local

BLOCK_METHODS = ("olora", "mlora")
_BLOCK_KEY = re.compile(r"^block(\d+)/")


def block_prefix(block: int) -> str:
    """Key prefix of a block's LoRA factors."""
    return f"block{block}/"


def block_indices(arrays: Mapping[str, np.ndarray]) -> list[int]:
    """Sorted indices of the blocks present in ``arrays``."""
    found = {int(m.group(1)) for k in arrays if (m := _BLOCK_KEY.match(k))}
    return sorted(found)


def block_arrays(arrays: Mapping[str, np.ndarray], block: int) -> dict[str, np.ndarray]:
    """The factors of one block, keys without the block prefix."""
    prefix = block_prefix(block)
    return {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}


@lru_cache(maxsize=2)
def block_model(
    path: str, capacity: int, rank: int, scaling: float, dropout: float
) -> nn.Module:
    """A copy of the base with ``capacity`` rank-``rank`` blocks per layer (cached).

    Callers overwrite every block with :func:`load_blocks` before each use.
    """
    model = copy.deepcopy(load_base(path).model)
    inject_subspace_lora(
        model,
        LORA_TARGETS,
        num_subspaces=capacity,
        rank=rank,
        scaling=scaling,
        dropout=dropout,
    )
    set_activation(model, torch.ones(capacity))
    model.eval()
    return model


def load_blocks(model: nn.Module, arrays: Mapping[str, np.ndarray]) -> None:
    """Write every ``block{k}/`` array into slot ``k``; zero the slots not given."""
    layers = dict(subspace_layers(model))
    present = block_indices(arrays)
    capacity = next(iter(layers.values())).num_subspaces
    if present and present[-1] >= capacity:
        raise KeyError(f"block {present[-1]} does not fit {capacity} blocks")
    with torch.no_grad():
        for layer in layers.values():
            layer.lora_A.zero_()
            layer.lora_B.zero_()
        for block in present:
            for key, value in block_arrays(arrays, block).items():
                module, factor, _ = key.rsplit(".", 2)
                target = getattr(layers[module], factor)
                target[block].copy_(torch.from_numpy(np.asarray(value)))
    set_activation(model, torch.ones(capacity))


def block_state(model: nn.Module, block: int) -> dict[str, np.ndarray]:
    """The factors of slot ``block`` under ``block{k}/`` keys (float32 arrays)."""
    out = {}
    prefix = block_prefix(block)
    for name, layer in subspace_layers(model):
        for factor in ("lora_A", "lora_B"):
            value = getattr(layer, factor)[block]
            out[f"{prefix}{name}.{factor}.weight"] = (
                value.detach().cpu().float().numpy().copy()
            )
    return out


def freeze_other_blocks(model: nn.Module, block: int) -> list:
    """Mask the gradients of every slot but ``block``; return the hook handles."""
    handles = []
    for _, layer in subspace_layers(model):
        mask = torch.zeros(layer.num_subspaces, 1, 1)
        mask[block] = 1.0
        for param in (layer.lora_A, layer.lora_B):
            handles.append(param.register_hook(lambda g, m=mask: g * m))
    return handles


def block_layers(model: nn.Module) -> list[SubspaceLoraLinear]:
    """The block layers of ``model``."""
    return [layer for _, layer in subspace_layers(model)]


def train_wrapped(
    model: nn.Module,
    config: RunConfig,
    runtime: Runtime,
    samples: Sequence[Sample],
    projector: dict[str, np.ndarray],
    *,
    seed: int,
    loss_hook: Callable[[], torch.Tensor] | None = None,
) -> float:
    """Local training of an adapted model (PEFT LoRA or wrapped adapter layers).

    Trainable: every parameter named ``lora_*`` and, when trained, the projector.
    Images are normalised with the base's pixel statistics.
    """
    load_projector_state(model, projector or projector_state(runtime.bundle.model))
    groups = trainable_param_groups(
        model,
        lr=config.lr,
        projector_lr=config.projector_lr,
        train_projector=config.train_projector and bool(projector),
    )
    return train_local(
        model,
        runtime.bundle.tokenizer,
        samples,
        image_size=runtime.bundle.image_size,
        num_image_tokens=runtime.bundle.num_image_tokens,
        param_groups=groups,
        epochs=config.local_epochs,
        batch_size=config.batch_size,
        warmup_ratio=config.warmup_ratio,
        seed=seed,
        image_mean=runtime.bundle.image_mean,
        image_std=runtime.bundle.image_std,
        loss_hook=loss_hook,
    )


def train_block(
    config: RunConfig,
    runtime: Runtime,
    received: dict[str, np.ndarray],
    samples: Sequence[Sample],
    *,
    block: int,
    seed: int,
    regulariser: Callable[[nn.Module, int], torch.Tensor] | None = None,
) -> tuple[dict[str, np.ndarray], float]:
    """Train block ``block`` with the earlier blocks frozen in the forward pass.

    Returns the block's factors (and the projector when it travelled) and the mean
    training loss. ``regulariser(model, block)`` is added to the loss at each step.
    """
    model = block_model(
        runtime.base_path,
        runtime.schedule.num_stages,
        config.subspace_rank,
        config.lora_scaling,
        config.lora_dropout,
    )
    adapter, projector = split_projector(received)
    if not block_arrays(adapter, block):
        raise KeyError(f"the message lacks block {block}")
    load_blocks(model, adapter)
    handles = freeze_other_blocks(model, block)
    hook = None if regulariser is None else (lambda: regulariser(model, block))
    try:
        loss = train_wrapped(
            model, config, runtime, samples, projector, seed=seed, loss_hook=hook
        )
    finally:
        for handle in handles:
            handle.remove()
    arrays = block_state(model, block)
    if projector:
        arrays.update(projector_state(model))
    return arrays, loss

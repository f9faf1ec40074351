"""MoELoRA: LoRA experts with a learned token-level router.

Chen et al., "CoIN: A Benchmark of Continual Instruction tuNing for Multimodel Large
Language Model", 2024 (its MoELoRA baseline).

Every adapted layer holds E experts of rank ``lora-rank / E`` (the same total rank
as Finetune's adapter) and a router ``R``; per token ``g = softmax over the top-k of
R x`` and ``y = W x + scaling * sum_e g_e B_e A_e x``
(:class:`fcit_flower.models.moe_lora.MoeLoraLinear`). The local loss is the LM loss.
Federated like Finetune: experts *and* router are averaged with FedAvg every round
(any server optimizer). Keys ``moelora-experts`` (E, default 8) and ``moelora-top-k``
(default 2). Arrays are keyed ``<module>.lora_A`` (E, r, in), ``<module>.lora_B``
(E, out, r) and ``<module>.lora_router`` (E, in).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import torch
from torch import nn

from fcit_flower.config import RunConfig
from fcit_flower.methods.lora_blocks import train_wrapped
from fcit_flower.models.adapters import (
    LORA_TARGETS,
    load_base,
    projector_state,
    split_projector,
)
from fcit_flower.models.moe_lora import inject_moe_lora
from fcit_flower.runtime import Runtime
from fcit_flower.tasks.fcit_data import Sample


def _build(
    path: str, experts: int, rank: int, top_k: int, scaling: float, dropout: float
) -> nn.Module:
    model = copy.deepcopy(load_base(path).model)
    inject_moe_lora(
        model,
        LORA_TARGETS,
        num_experts=experts,
        rank=rank,
        top_k=top_k,
        scaling=scaling,
        dropout=dropout,
    )
    model.eval()
    return model


def moe_model(config: RunConfig, path: str) -> nn.Module:
    """A cached MoE-LoRA copy of the base; callers load its state before use."""
    return _cached_build(path, *_shape(config))


_cached_build = lru_cache(maxsize=2)(_build)


def _shape(config: RunConfig) -> tuple[int, int, int, float, float]:
    experts = config.moelora_experts
    return (
        experts,
        config.lora_rank // experts,
        config.moelora_top_k,
        config.lora_scaling,
        config.lora_dropout,
    )


def moe_state(model: nn.Module) -> dict[str, np.ndarray]:
    """Experts and routers as float32 arrays keyed by parameter name."""
    return {
        name: param.detach().cpu().float().numpy().copy()
        for name, param in model.named_parameters()
        if ".lora_" in name
    }


def load_moe_state(model: nn.Module, arrays: dict[str, np.ndarray]) -> None:
    """Write :func:`moe_state` arrays into ``model`` (strict on the key set)."""
    params = {n: p for n, p in model.named_parameters() if ".lora_" in n}
    if set(params) != set(arrays):
        missing = sorted(set(params) - set(arrays))[:2]
        extra = sorted(set(arrays) - set(params))[:2]
        raise KeyError(f"MoE-LoRA keys differ (missing {missing}, unexpected {extra})")
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(torch.from_numpy(np.asarray(arrays[name])))


def init_moe_arrays(config: RunConfig, path: str) -> dict[str, np.ndarray]:
    """Seeded initial experts (A Kaiming-uniform, B zero) and routers."""
    torch.manual_seed(config.seed)
    return moe_state(_build(path, *_shape(config)))


def train_moe(
    config: RunConfig,
    runtime: Runtime,
    received: dict[str, np.ndarray],
    samples: Sequence[Sample],
    *,
    seed: int,
) -> tuple[dict[str, np.ndarray], float]:
    """Local MoE-LoRA training; returns (experts + routers [+ projector], loss)."""
    model = moe_model(config, runtime.base_path)
    adapter, projector = split_projector(received)
    load_moe_state(model, adapter)
    loss = train_wrapped(model, config, runtime, samples, projector, seed=seed)
    arrays = moe_state(model)
    if projector:
        arrays.update(projector_state(model))
    return arrays, loss

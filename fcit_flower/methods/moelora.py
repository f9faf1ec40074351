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

from functools import lru_cache, partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from fcit_flower.config import ConfigError, RunConfig
from fcit_flower.evaluation import EvaluationModel
from fcit_flower.export.tensors import save_arrays
from fcit_flower.methods.base import ClientSetup, ClientUpdate, Method, ServerSetup
from fcit_flower.methods.registry import register
from fcit_flower.models.adapters import (
    injected_copy,
    load_projector_state,
    projector_state,
)
from fcit_flower.models.moe_lora import inject_moe_lora
from fcit_flower.protocol import Arrays, split_projector
from fcit_flower.runtime import Runtime

if TYPE_CHECKING:
    from fcit_flower.strategies.continual import ContinualFedAvg


def _build(
    path: str, experts: int, rank: int, top_k: int, scaling: float, dropout: float
) -> nn.Module:
    inject = partial(
        inject_moe_lora,
        num_experts=experts,
        rank=rank,
        top_k=top_k,
        scaling=scaling,
        dropout=dropout,
    )
    return injected_copy(path, inject)


def moe_model(config: RunConfig, path: str) -> nn.Module:
    """A cached MoE-LoRA copy of the base; callers load its state before use."""
    return _cached_build(path, *_shape(config))


_cached_build = lru_cache(maxsize=2)(_build)


def forget_models() -> None:
    """Drop the cached MoE-LoRA copies (a site worker starting a new run)."""
    _cached_build.cache_clear()


def _shape(config: RunConfig) -> tuple[int, int, int, float, float]:
    experts = config.moelora_experts
    return (
        experts,
        config.lora_rank // experts,
        config.moelora_top_k,
        config.scaling(config.lora_rank // experts),
        config.lora_dropout,
    )


def moe_state(model: nn.Module) -> Arrays:
    """Experts and routers as float32 arrays keyed by parameter name."""
    return {
        name: param.detach().cpu().float().numpy().copy()
        for name, param in model.named_parameters()
        if ".lora_" in name
    }


def load_moe_state(model: nn.Module, arrays: Arrays) -> None:
    """Write :func:`moe_state` arrays into ``model`` (strict on the key set)."""
    params = {n: p for n, p in model.named_parameters() if ".lora_" in n}
    if set(params) != set(arrays):
        missing = sorted(set(params) - set(arrays))[:2]
        extra = sorted(set(arrays) - set(params))[:2]
        raise KeyError(f"MoE-LoRA keys differ (missing {missing}, unexpected {extra})")
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(torch.from_numpy(np.asarray(arrays[name])))


def init_moe_arrays(config: RunConfig, path: str) -> Arrays:
    """Seeded initial experts (A Kaiming-uniform, B zero) and routers."""
    torch.manual_seed(config.seed)
    return moe_state(_build(path, *_shape(config)))


class MoeLora(Method):
    """Routed LoRA experts, averaged (experts and routers) like Finetune."""

    name = "moelora"

    def check_config(self, config: RunConfig) -> None:
        """The total rank must split evenly over the experts."""
        if config.lora_rank % config.moelora_experts:
            raise ConfigError(
                f"lora-rank={config.lora_rank} must be divisible by "
                f"moelora-experts={config.moelora_experts}"
            )

    def build_server(self, setup: ServerSetup) -> tuple[ContinualFedAvg, Arrays]:
        """FedAvg of experts and routers."""
        from fcit_flower.strategies.continual import ContinualFedAvg

        strategy = ContinualFedAvg(federation=setup.federation)
        initial = init_moe_arrays(setup.config, setup.runtime.base_path)
        return strategy, {**initial, **setup.projector()}

    def train_client(self, setup: ClientSetup, received: Arrays) -> ClientUpdate:
        """Local MoE-LoRA training: experts + routers (+ projector) go back."""
        model = moe_model(setup.config, setup.runtime.base_path)
        adapter, projector = split_projector(received)
        load_moe_state(model, adapter)
        loss = setup.train(model, projector)
        arrays = moe_state(model)
        if projector:
            arrays.update(projector_state(model))
        return ClientUpdate(arrays, loss)

    def evaluation_model(
        self, config: RunConfig, runtime: Runtime, arrays: Arrays
    ) -> EvaluationModel:
        """The base with the global experts and routers."""
        adapter, projector = split_projector(arrays)
        model = moe_model(config, runtime.base_path)
        load_moe_state(model, adapter)
        load_projector_state(model, projector or projector_state(runtime.bundle.model))
        model.eval()
        return EvaluationModel(model)

    def export_arrays(
        self, config: RunConfig, arrays: Arrays, *, folder: Path, base_name: str
    ) -> dict[str, Any]:
        """Experts and routers in ``arrays.safetensors`` (no PEFT form: routed)."""
        experts, rank, top_k, scaling, _ = _shape(config)
        layout = {
            "kind": "moe-lora",
            "experts": experts,
            "expert_rank": rank,
            "top_k": top_k,
            "scaling": scaling,
            "keys": {
                "<module>.lora_A": "(experts, rank, in)",
                "<module>.lora_B": "(experts, out, rank)",
                "<module>.lora_router": "(experts, in)",
            },
            "forward": "y = W x + scaling * sum_e g_e B_e A_e x; "
            "g = softmax over the top-k of lora_router x, 0 elsewhere",
            "base": base_name,
        }
        save_arrays(folder, arrays, layout)
        return layout


register(MoeLora())

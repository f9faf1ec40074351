"""MoE-LoRA layer: E LoRA experts mixed by a learned token-level top-k router.

Follows the shape of PEFT's LoRA layer (``peft/tuners/lora/layer.py``): explicit
adapter state (``lora_A``, ``lora_B``, ``lora_router``, ``scaling``), one
constructor that creates it, and the base layer wrapped, not modified. Expert ``e``
owns ``A_e`` (r x in) and ``B_e`` (out x r); the router is a bias-free linear map
``R`` (E x in). For a token ``x``

    logits = R x;  K = top-k indices of logits
    g_e = softmax(logits_K)_e for e in K, 0 otherwise   (sum_e g_e = 1)
    y = W x + scaling * sum_e g_e B_e A_e x

as in MoELoRA (Chen et al., "CoIN: A Benchmark of Continual Instruction tuNing for
Multimodel Large Language Model", 2024). All experts are computed in one batched
matmul and the gate zeroes the unselected ones (E is small).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from fcit_flower.models.subspace_lora import replace_linears


class MoeLoraLinear(nn.Module):
    """A ``nn.Linear`` with E routed LoRA experts.

    Parameters
    ----------
    base_layer : nn.Linear
        The frozen layer to adapt.
    num_experts : int
        E, the number of experts.
    rank : int
        Rank of each expert.
    top_k : int
        Experts used per token (1 <= top_k <= E).
    scaling : float
        Output scale (``lora_alpha / total_rank``).
    dropout : float
        Dropout on the adapter input.
    """

    def __init__(
        self,
        base_layer: nn.Linear,
        *,
        num_experts: int,
        rank: int,
        top_k: int,
        scaling: float,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if not 1 <= top_k <= num_experts:
            raise ValueError(f"top_k={top_k} must lie in [1, {num_experts}]")
        self.base_layer = base_layer
        self.num_experts = num_experts
        self.rank = rank
        self.top_k = top_k
        self.scaling = scaling
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        inputs, outputs = base_layer.in_features, base_layer.out_features
        device = base_layer.weight.device  # float32 experts beside a (4-bit) base
        self.lora_A = nn.Parameter(
            torch.zeros(num_experts, rank, inputs, device=device)
        )
        self.lora_B = nn.Parameter(
            torch.zeros(num_experts, outputs, rank, device=device)
        )
        self.lora_router = nn.Parameter(torch.zeros(num_experts, inputs, device=device))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """A and the router Kaiming-uniform (as ``nn.Linear``), B zero."""
        with torch.no_grad():
            for e in range(self.num_experts):
                nn.init.kaiming_uniform_(self.lora_A[e], a=math.sqrt(5))
            nn.init.kaiming_uniform_(self.lora_router, a=math.sqrt(5))
            self.lora_B.zero_()

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """Sparse gate ``(..., E)``: softmax over the top-k router logits."""
        logits = x @ self.lora_router.to(x.dtype).T
        top = logits.topk(self.top_k, dim=-1)
        weights = torch.softmax(top.values, dim=-1)
        return torch.zeros_like(logits).scatter(-1, top.indices, weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Base output plus the gated expert outputs."""
        result = self.base_layer(x)
        num, rank = self.num_experts, self.rank
        a_stacked = self.lora_A.reshape(num * rank, -1).to(x.dtype)
        b_stacked = self.lora_B.permute(1, 0, 2).reshape(-1, num * rank).to(x.dtype)
        hidden = self.lora_dropout(x) @ a_stacked.T  # (..., E * r)
        gate = self.gate(x).repeat_interleave(rank, dim=-1)
        return result + self.scaling * ((hidden * gate) @ b_stacked.T)


def inject_moe_lora(
    model: nn.Module,
    target_suffixes: tuple[str, ...],
    *,
    num_experts: int,
    rank: int,
    top_k: int,
    scaling: float,
    dropout: float = 0.0,
    scope: str = "language_model",
) -> dict[str, MoeLoraLinear]:
    """Wrap every ``nn.Linear`` named ``*.{suffix}`` inside ``scope`` in place."""
    return replace_linears(
        model,
        target_suffixes,
        scope,
        lambda base: MoeLoraLinear(
            base,
            num_experts=num_experts,
            rank=rank,
            top_k=top_k,
            scaling=scaling,
            dropout=dropout,
        ),
    )

"""Multi-subspace LoRA: E low-rank subspaces per layer, mixed by activation weights.

Follows the shape of PEFT's LoRA layer (``peft/tuners/lora/layer.py``): the adapter
state is explicit (``lora_A``, ``lora_B``, ``scaling``), one constructor creates it,
and the base layer is wrapped, not modified. Subspace ``i`` owns ``A_i`` (r x in)
and ``B_i`` (out x r); the layer computes

    y = W x + scaling * sum_i w_i B_i A_i x

for activation weights ``w`` (per batch, shape ``(E,)``, or per example, ``(B, E)``)
in one batched matmul over the stacked subspaces, not a Python loop over E. With
one-hot ``w`` it is exactly a rank-r LoRA of the chosen subspace (how a DISCO client
trains); with SSA weights it is DISCO inference (Guo et al., ICCV 2025, Sec. 4.3).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TypeVar

import numpy as np
import torch
from torch import nn

WrappedT = TypeVar("WrappedT", bound=nn.Module)


class SubspaceLoraLinear(nn.Module):
    """A ``nn.Linear`` with E LoRA subspaces.

    Parameters
    ----------
    base_layer : nn.Linear
        The frozen layer to adapt.
    num_subspaces : int
        E, the number of subspaces.
    rank : int
        Rank of each subspace.
    scaling : float
        Output scale (``lora_alpha / total_rank`` in the reference).
    dropout : float
        Dropout on the adapter input.
    """

    def __init__(
        self,
        base_layer: nn.Linear,
        *,
        num_subspaces: int,
        rank: int,
        scaling: float,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.num_subspaces = num_subspaces
        self.rank = rank
        self.scaling = scaling
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        device = base_layer.weight.device  # float32 factors beside a (4-bit) base
        self.lora_A = nn.Parameter(
            torch.zeros(num_subspaces, rank, base_layer.in_features, device=device)
        )
        self.lora_B = nn.Parameter(
            torch.zeros(num_subspaces, base_layer.out_features, rank, device=device)
        )
        self.activation: torch.Tensor = (
            torch.ones(num_subspaces, device=device) / num_subspaces
        )
        self.reset_subspaces(range(num_subspaces))

    def reset_subspaces(self, indices: range | list[int]) -> None:
        """Re-initialise subspaces as PEFT does: A Kaiming-uniform, B zero."""
        with torch.no_grad():
            for i in indices:
                nn.init.kaiming_uniform_(self.lora_A[i], a=math.sqrt(5))
                self.lora_B[i].zero_()

    def set_activation(self, weights: torch.Tensor) -> None:
        """Set the subspace weights: shape ``(E,)`` or ``(batch, E)``."""
        if weights.shape[-1] != self.num_subspaces:
            raise ValueError(
                f"activation has {weights.shape[-1]} weights for "
                f"{self.num_subspaces} subspaces"
            )
        self.activation = weights.to(self.lora_A.device)  # SSA weights come from numpy

    def delta_weight(self, weights: torch.Tensor) -> torch.Tensor:
        """Dense ``scaling * sum_i w_i B_i A_i`` for batch-level ``weights``."""
        return self.scaling * torch.einsum(
            "e,eor,eri->oi", weights, self.lora_B, self.lora_A
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Base output plus the weighted subspace outputs."""
        result = self.base_layer(x)
        num, rank = self.num_subspaces, self.rank
        a_stacked = self.lora_A.reshape(num * rank, -1)
        b_stacked = self.lora_B.permute(1, 0, 2).reshape(-1, num * rank)
        hidden = self.lora_dropout(x).to(a_stacked.dtype) @ a_stacked.T  # (..., E*r)
        gate = self.activation.to(hidden.device, hidden.dtype)
        gate = gate.repeat_interleave(rank, dim=-1)
        if gate.dim() == 2:  # per example: broadcast over the sequence axis
            gate = gate.view(gate.shape[0], *([1] * (hidden.dim() - 2)), -1)
        delta = self.scaling * ((hidden * gate) @ b_stacked.T)
        return result + delta.to(result.dtype)


def inject_subspace_lora(
    model: nn.Module,
    target_suffixes: tuple[str, ...],
    *,
    num_subspaces: int,
    rank: int,
    scaling: float,
    dropout: float = 0.0,
    scope: str = "language_model",
) -> dict[str, SubspaceLoraLinear]:
    """Wrap every ``nn.Linear`` named ``*.{suffix}`` inside ``scope`` in place.

    Returns
    -------
    dict
        Module name -> the new :class:`SubspaceLoraLinear`.
    """
    return replace_linears(
        model,
        target_suffixes,
        scope,
        lambda base: SubspaceLoraLinear(
            base,
            num_subspaces=num_subspaces,
            rank=rank,
            scaling=scaling,
            dropout=dropout,
        ),
    )


def replace_linears(
    model: nn.Module,
    target_suffixes: Sequence[str],
    scope: str,
    wrap: Callable[[nn.Linear], WrappedT],
) -> dict[str, WrappedT]:
    """Replace every ``nn.Linear`` named ``*.{suffix}`` inside ``scope`` by ``wrap``.

    Returns
    -------
    dict
        Module name -> the wrapper put in its place.
    """
    targets = [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear)
        and scope in name
        and name.rsplit(".", 1)[-1] in target_suffixes
    ]
    if not targets:
        raise ValueError(f"no nn.Linear named {target_suffixes} inside {scope!r}")
    layers = {}
    for name in targets:
        parent_name, child = name.rsplit(".", 1)
        parent = model.get_submodule(parent_name)
        layer = wrap(getattr(parent, child))
        setattr(parent, child, layer)
        layers[name] = layer
    return layers


def subspace_layers(model: nn.Module) -> Iterator[tuple[str, SubspaceLoraLinear]]:
    """All :class:`SubspaceLoraLinear` modules of ``model`` with their names."""
    for name, module in model.named_modules():
        if isinstance(module, SubspaceLoraLinear):
            yield name, module


def set_activation(model: nn.Module, weights: torch.Tensor) -> None:
    """Set the same activation weights on every subspace layer of ``model``."""
    for _, layer in subspace_layers(model):
        layer.set_activation(weights)


def load_slots(model: nn.Module, slots: Mapping[int, Mapping[str, np.ndarray]]) -> None:
    """Zero every subspace, then write ``slots[k]`` into subspace ``k``.

    Keys are canonical LoRA keys (``<module>.lora_A.weight``, ``.lora_B.weight``).

    Raises
    ------
    KeyError
        When a slot index does not fit the layers' capacity.
    """
    layers = dict(subspace_layers(model))
    capacity = next(iter(layers.values())).num_subspaces
    too_far = [k for k in slots if k >= capacity]
    if too_far:
        raise KeyError(f"subspace {max(too_far)} does not fit {capacity} subspaces")
    with torch.no_grad():
        for layer in layers.values():
            layer.lora_A.zero_()
            layer.lora_B.zero_()
        for slot, arrays in slots.items():
            for key, value in arrays.items():
                module, factor, _ = key.rsplit(".", 2)
                target = getattr(layers[module], factor)
                target[slot].copy_(torch.from_numpy(np.asarray(value)))


def slot_state(model: nn.Module, slot: int) -> dict[str, np.ndarray]:
    """The factors of subspace ``slot`` under canonical keys (float32 arrays)."""
    out = {}
    for name, layer in subspace_layers(model):
        for factor in ("lora_A", "lora_B"):
            value = getattr(layer, factor)[slot]
            out[f"{name}.{factor}.weight"] = value.detach().cpu().float().numpy().copy()
    return out

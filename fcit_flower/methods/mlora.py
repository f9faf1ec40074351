"""M-LoRA: one LoRA module per task stage, merged by summation for inference.

The FCIT paper (Guo et al., ICCV 2025) lists M-LoRA among its continual baselines
without giving its formulation (the authors' code does not release it). This project
implements the plain multi-module reading: stage ``s`` trains a fresh module
``(A_s, B_s)`` (A Kaiming-uniform, B zero, rank ``lora-rank / num-subspaces``, the
rank of one DISCO subspace, so the total rank over all stages equals DISCO's budget)
with the earlier modules present in the forward pass and frozen, and inference uses
the merged update

    Delta W = scaling * sum_{k <= s} B_k A_k          (a sum, not an average)

We sum rather than average because each module was trained on top of the sum of the
earlier ones: the sum is exactly the model the last stage optimised, while an
average would shrink every module by ``1 / (s + 1)`` and match no trained model. The
local loss is the LM loss only (no regulariser); this is O-LoRA with
``lambda_orth = lambda_l2 = 0``, which isolates what the orthogonality term adds.
Federated: module ``s`` is averaged with FedAvg over the stage's clients; the server
keeps all modules (:class:`fcit_flower.strategies.blocks.BlockLora`).
"""

from __future__ import annotations

import torch

from fcit_flower.methods.lora_blocks import BlockMethod
from fcit_flower.methods.registry import register
from fcit_flower.models.subspace_lora import SubspaceLoraLinear


class MLora(BlockMethod):
    """One block per stage, earlier ones frozen, summed; LM loss only."""

    name = "mlora"


register(MLora())


def merged_delta(layer: SubspaceLoraLinear, num_modules: int) -> torch.Tensor:
    """``scaling * sum_{k < num_modules} B_k A_k``: the merged weight update."""
    return layer.scaling * torch.einsum(
        "kor,kri->oi", layer.lora_B[:num_modules], layer.lora_A[:num_modules]
    )


def merge_into_base(layer: SubspaceLoraLinear, num_modules: int) -> torch.nn.Linear:
    """A plain ``nn.Linear`` with ``W + merged_delta`` (deployment without adapters)."""
    base = layer.base_layer
    merged = torch.nn.Linear(
        base.in_features, base.out_features, bias=base.bias is not None
    )
    with torch.no_grad():
        merged.weight.copy_(base.weight + merged_delta(layer, num_modules))
        if base.bias is not None:
            merged.bias.copy_(base.bias)
    return merged

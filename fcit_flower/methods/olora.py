"""O-LoRA: one LoRA block per stage, kept orthogonal to the earlier ones.

Wang et al., "Orthogonal Subspace Learning for Language Model Continual Learning",
Findings of EMNLP 2023.

Stage ``s`` trains a new LoRA block ``(A_s, B_s)``; the blocks of earlier stages stay
in the model, frozen, and all blocks are summed at inference
(:mod:`fcit_flower.methods.lora_blocks`). The local loss of stage ``s`` is

    L = L_LM + lambda_orth * sum_layers sum_{k<s} sum_{i,j} |(A_s A_k^T)_{ij}|
             + lambda_l2 * sum_layers (||A_s||_F^2 + ||B_s||_F^2)

(paper Eq. 5-6: the L1 norm of the entries of ``A_s A_k^T`` pushes the row space of
the new block's ``A`` orthogonal to every earlier one; the L2 term keeps the new
block small). Run-config keys ``olora-lambda-orth`` (default 0.5, the paper's
lambda_1) and ``olora-lambda-l2`` (default 0: no L2 term).
Federated: block ``s`` is averaged with FedAvg over the stage's clients; the server
keeps all blocks (:class:`fcit_flower.strategies.blocks.BlockLora`).
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from fcit_flower.config import RunConfig
from fcit_flower.methods.lora_blocks import BlockMethod, Regulariser, block_layers
from fcit_flower.methods.registry import register


def orthogonality_loss(a_new: torch.Tensor, a_previous: torch.Tensor) -> torch.Tensor:
    """``sum_k sum_ij |(A_new A_k^T)_ij|`` for ``a_previous`` of shape (K, r, in).

    ``a_new`` has shape ``(r, in)``; earlier blocks are constants (detached).
    """
    if a_previous.shape[0] == 0:
        return a_new.new_zeros(())
    stacked = a_previous.detach().reshape(-1, a_previous.shape[-1])
    return (a_new @ stacked.T).abs().sum()


def olora_regulariser(
    model: nn.Module, block: int, *, lambda_orth: float, lambda_l2: float
) -> torch.Tensor:
    """O-LoRA's extra loss for training block ``block`` of ``model``."""
    layers = block_layers(model)
    total = layers[0].lora_A.new_zeros(())
    for layer in layers:
        a_new = layer.lora_A[block]
        if lambda_orth and block > 0:
            total = total + lambda_orth * orthogonality_loss(
                a_new, layer.lora_A[:block]
            )
        if lambda_l2:
            total = total + lambda_l2 * (
                a_new.pow(2).sum() + layer.lora_B[block].pow(2).sum()
            )
    return total


class OLora(BlockMethod):
    """One block per stage, pushed orthogonal to the earlier ones."""

    name = "olora"

    def regulariser(self, config: RunConfig) -> Regulariser | None:
        """The orthogonality (and L2) terms of the run's lambdas."""
        return partial(
            olora_regulariser,
            lambda_orth=config.olora_lambda_orth,
            lambda_l2=config.olora_lambda_l2,
        )


register(OLora())

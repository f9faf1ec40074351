"""Dispatch of the baselines with wrapped adapter layers (issue 6).

O-LoRA and M-LoRA train one LoRA block per stage
(:mod:`fcit_flower.methods.lora_blocks`); MoELoRA trains routed experts
(:mod:`fcit_flower.methods.moelora`). Both sides (client training, server
evaluation) get their model and arrays from here. EWC uses the PEFT adapter of
Finetune and is wired directly in the ClientApp.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import numpy as np
from torch import nn

from fcit_flower.config import RunConfig
from fcit_flower.methods.lora_blocks import (
    BLOCK_METHODS,
    block_indices,
    block_model,
    load_blocks,
    train_block,
)
from fcit_flower.methods.moelora import load_moe_state, moe_model, train_moe
from fcit_flower.methods.olora import olora_regulariser
from fcit_flower.models.adapters import (
    load_projector_state,
    projector_state,
    split_projector,
)
from fcit_flower.runtime import Runtime
from fcit_flower.tasks.fcit_data import Sample

WRAPPED_METHODS = (*BLOCK_METHODS, "moelora")


def train_wrapped_method(
    config: RunConfig,
    runtime: Runtime,
    received: dict[str, np.ndarray],
    samples: Sequence[Sample],
    seed: int,
) -> tuple[dict[str, np.ndarray], float]:
    """One client's local training for O-LoRA, M-LoRA or MoELoRA."""
    if config.method == "moelora":
        return train_moe(config, runtime, received, samples, seed=seed)
    block = block_indices(received)[-1] if block_indices(received) else 0
    regulariser = None
    if config.method == "olora":
        regulariser = partial(
            olora_regulariser,
            lambda_orth=config.olora_lambda_orth,
            lambda_l2=config.olora_lambda_l2,
        )
    return train_block(
        config,
        runtime,
        received,
        samples,
        block=block,
        seed=seed,
        regulariser=regulariser,
    )


def wrapped_eval_model(
    config: RunConfig, runtime: Runtime, arrays: dict[str, np.ndarray]
) -> nn.Module:
    """The inference model of a global state: summed blocks, or the MoE."""
    adapter, projector = split_projector(arrays)
    if config.method == "moelora":
        model = moe_model(config, runtime.base_path)
        load_moe_state(model, adapter)
    else:
        model = block_model(
            runtime.base_path,
            runtime.schedule.num_stages,
            config.subspace_rank,
            config.lora_scaling,
            config.lora_dropout,
        )
        load_blocks(model, adapter)
    load_projector_state(model, projector or projector_state(runtime.bundle.model))
    model.eval()
    return model

"""One LoRA block per stage: what O-LoRA and M-LoRA share, on both sides.

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
``block{k}/<module>.lora_B.weight`` (``(out, r_b)``); the server side is
:class:`fcit_flower.strategies.blocks.BlockLora`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from fcit_flower.config import RunConfig
from fcit_flower.evaluation import EvaluationModel
from fcit_flower.export.tensors import read_peft_adapter, save_peft_adapter
from fcit_flower.methods.base import ClientSetup, ClientUpdate, Method, ServerSetup
from fcit_flower.models.adapters import (
    load_projector_state,
    projector_state,
    subspace_model,
)
from fcit_flower.models.subspace_lora import (
    SubspaceLoraLinear,
    load_slots,
    set_activation,
    slot_state,
    subspace_layers,
)
from fcit_flower.protocol import (
    Arrays,
    block_arrays,
    block_indices,
    block_prefix,
    split_projector,
)
from fcit_flower.runtime import Runtime

if TYPE_CHECKING:
    from fcit_flower.strategies.continual import ContinualFedAvg

# ``regulariser(model, block)``: an extra loss term while block ``block`` trains.
Regulariser = Callable[[nn.Module, int], torch.Tensor]


def run_block_model(config: RunConfig, runtime: Runtime) -> nn.Module:
    """The cached block model of a run: one block per stage, of a subspace's rank."""
    return subspace_model(
        runtime.base_path,
        runtime.schedule.num_stages,
        config.subspace_rank,
        config.scaling(config.subspace_rank),
        config.lora_dropout,
    )


def load_blocks(model: nn.Module, arrays: Arrays) -> None:
    """Write every ``block{k}/`` array into slot ``k``; zero the slots not given."""
    blocks = {b: block_arrays(arrays, b) for b in block_indices(arrays)}
    load_slots(model, blocks)
    layers = [layer for _, layer in subspace_layers(model)]
    set_activation(model, layers[0].lora_A.new_ones(layers[0].num_subspaces))


def block_state(model: nn.Module, block: int) -> Arrays:
    """The factors of slot ``block`` under ``block{k}/`` keys (float32 arrays)."""
    prefix = block_prefix(block)
    return {prefix + k: v for k, v in slot_state(model, block).items()}


def concat_blocks(blocks: Sequence[Arrays]) -> Arrays:
    """One LoRA equal to the sum of ``blocks``: A stacked by rows, B by columns.

    ``sum_k B_k A_k = [B_0 ... B_n] [A_0; ...; A_n]``, so the blocks' sum is a
    plain LoRA of rank ``n * r_b`` at the blocks' scale.
    """
    return {
        key: np.concatenate(
            [block[key] for block in blocks], axis=0 if ".lora_A." in key else 1
        )
        for key in blocks[0]
    }


def split_blocks(merged: Arrays, rank: int) -> list[Arrays]:
    """The rank-``rank`` blocks of :func:`concat_blocks`'s LoRA, in order."""
    count = next(v.shape[0] for k, v in merged.items() if ".lora_A." in k) // rank
    return [
        {
            key: value[k * rank : (k + 1) * rank]
            if ".lora_A." in key
            else value[:, k * rank : (k + 1) * rank]
            for key, value in merged.items()
        }
        for k in range(count)
    ]


def freeze_other_blocks(model: nn.Module, block: int) -> list:
    """Mask the gradients of every slot but ``block``; return the hook handles."""
    handles = []
    for _, layer in subspace_layers(model):
        # On the factors' device and dtype: a CPU mask times a GPU gradient fails.
        mask = layer.lora_A.new_zeros(layer.num_subspaces, 1, 1)
        mask[block] = 1.0
        for param in (layer.lora_A, layer.lora_B):
            handles.append(param.register_hook(lambda g, m=mask: g * m))
    return handles


def block_layers(model: nn.Module) -> list[SubspaceLoraLinear]:
    """The block layers of ``model``."""
    return [layer for _, layer in subspace_layers(model)]


def train_block(
    setup: ClientSetup,
    received: Arrays,
    *,
    block: int,
    regulariser: Regulariser | None = None,
) -> ClientUpdate:
    """Train block ``block`` with the earlier blocks frozen in the forward pass.

    The update holds the block's factors (and the projector when it travelled).
    ``regulariser(model, block)`` is added to the loss at each step.
    """
    model = run_block_model(setup.config, setup.runtime)
    adapter, projector = split_projector(received)
    if not block_arrays(adapter, block):
        raise KeyError(f"the message lacks block {block}")
    load_blocks(model, adapter)
    handles = freeze_other_blocks(model, block)
    hook = None if regulariser is None else (lambda: regulariser(model, block))
    try:
        loss = setup.train(model, projector, hook)
    finally:
        for handle in handles:
            handle.remove()
    arrays = block_state(model, block)
    if projector:
        arrays.update(projector_state(model))
    return ClientUpdate(arrays, loss)


class BlockMethod(Method):
    """A new LoRA block per stage, earlier blocks frozen, all summed at inference."""

    def regulariser(self, config: RunConfig) -> Regulariser | None:
        """The extra loss of the block being trained (none here)."""
        return None

    def build_server(self, setup: ServerSetup) -> tuple[ContinualFedAvg, Arrays]:
        """Keep every block; open block 0 now, later ones at their stage."""
        from fcit_flower.strategies.blocks import BlockLora

        init_block = setup.lora_factors(setup.config.subspace_rank)
        strategy = BlockLora(federation=setup.federation, init_block=init_block)
        first = {block_prefix(0) + k: v for k, v in init_block(0).items()}
        return strategy, {**first, **setup.projector()}

    def train_client(self, setup: ClientSetup, received: Arrays) -> ClientUpdate:
        """Train the newest block received."""
        present = block_indices(received)
        return train_block(
            setup,
            received,
            block=present[-1] if present else 0,
            regulariser=self.regulariser(setup.config),
        )

    def evaluation_model(
        self, config: RunConfig, runtime: Runtime, arrays: Arrays
    ) -> EvaluationModel:
        """The base with every block so far, summed."""
        adapter, projector = split_projector(arrays)
        model = run_block_model(config, runtime)
        load_blocks(model, adapter)
        load_projector_state(model, projector or projector_state(runtime.bundle.model))
        model.eval()
        return EvaluationModel(model)

    def export_arrays(
        self, config: RunConfig, arrays: Arrays, *, folder: Path, base_name: str
    ) -> dict[str, Any]:
        """The sum of the blocks so far as one stock PEFT adapter."""
        adapter, projector = split_projector(arrays)
        blocks = [block_arrays(adapter, b) for b in block_indices(adapter)]
        rank = config.subspace_rank
        save_peft_adapter(
            folder,
            {**concat_blocks(blocks), **projector},
            rank=rank * len(blocks),
            scaling=config.scaling(rank),
            dropout=config.lora_dropout,
            base_name=base_name,
        )
        return {"kind": "peft", "rank": rank * len(blocks), "blocks": len(blocks)}

    def import_arrays(self, config: RunConfig, folder: Path) -> Arrays:
        """The blocks (and projector) back from the merged PEFT adapter."""
        adapter, projector = split_projector(read_peft_adapter(folder))
        arrays = dict(projector)
        for index, block in enumerate(split_blocks(adapter, config.subspace_rank)):
            arrays.update({block_prefix(index) + k: v for k, v in block.items()})
        return arrays

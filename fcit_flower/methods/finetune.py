"""Finetune: plain federated LoRA (FedAvg of a PEFT adapter), stage after stage.

The FCIT paper's lower baseline: one rank-``lora-rank`` PEFT LoRA on the language
model's MLP projections, trained on each stage's data and averaged with FedAvg (any
server optimizer), so later stages overwrite earlier ones. The PEFT helpers here
serve every method with a PEFT adapter (EWC, zero-shot, the multi-task reference,
and DISCO's clients, which train one subspace as a PEFT adapter).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from fcit_flower.config import RunConfig
from fcit_flower.evaluation import EvaluationModel
from fcit_flower.export.tensors import read_peft_adapter, save_peft_adapter
from fcit_flower.methods.base import ClientSetup, ClientUpdate, Method, ServerSetup
from fcit_flower.methods.registry import register
from fcit_flower.models.adapters import (
    adapted_model,
    init_lora_arrays,
    load_lora_state,
    load_projector_state,
    lora_shapes,
    lora_state,
    projector_state,
)
from fcit_flower.protocol import Arrays, split_projector
from fcit_flower.runtime import Runtime

if TYPE_CHECKING:
    from fcit_flower.strategies.continual import ContinualFedAvg


def peft_model(
    config: RunConfig, runtime: Runtime, rank: int, arrays: Arrays
) -> nn.Module:
    """The cached rank-``rank`` PEFT model holding the adapter in ``arrays``."""
    model = adapted_model(
        runtime.base_path, rank, config.scaling(rank), config.lora_dropout
    )
    load_lora_state(model, split_projector(arrays)[0])
    return model


def peft_update(model: nn.Module, projector: Arrays) -> Arrays:
    """A PEFT client's upload: its LoRA, and the projector when it was sent."""
    arrays = lora_state(model)
    if projector:
        arrays.update(projector_state(model))
    return arrays


def train_peft(setup: ClientSetup, received: Arrays, rank: int) -> ClientUpdate:
    """Load ``received`` into the rank-``rank`` PEFT model, train it, upload it."""
    model = peft_model(setup.config, setup.runtime, rank, received)
    projector = split_projector(received)[1]
    # No projector in the message: it is not trained, so the base's is used.
    loss = setup.train(model, projector)
    return ClientUpdate(peft_update(model, projector), loss)


def peft_evaluation(
    config: RunConfig, runtime: Runtime, rank: int, arrays: Arrays
) -> EvaluationModel:
    """The PEFT inference model of a global adapter (and projector)."""
    model = peft_model(config, runtime, rank, arrays)
    projector = split_projector(arrays)[1]
    load_projector_state(model, projector or projector_state(runtime.bundle.model))
    return EvaluationModel(model)


class Finetune(Method):
    """Plain FedAvg of one PEFT LoRA adapter across stages."""

    name = "finetune"

    def initial_adapter(self, setup: ServerSetup) -> Arrays:
        """Seeded fresh factors of the rank-``lora-rank`` adapter."""
        config = setup.config
        shapes = lora_shapes(
            setup.runtime.base_path,
            config.lora_rank,
            config.lora_scaling,
            config.lora_dropout,
        )
        return init_lora_arrays(shapes, config.seed)

    def build_server(self, setup: ServerSetup) -> tuple[ContinualFedAvg, Arrays]:
        """FedAvg (with the run's server optimizer) of the adapter."""
        from fcit_flower.strategies.continual import ContinualFedAvg

        strategy = ContinualFedAvg(federation=setup.federation)
        return strategy, {**self.initial_adapter(setup), **setup.projector()}

    def train_client(self, setup: ClientSetup, received: Arrays) -> ClientUpdate:
        """Train the received adapter on the client's data."""
        return train_peft(setup, received, setup.config.lora_rank)

    def evaluation_model(
        self, config: RunConfig, runtime: Runtime, arrays: Arrays
    ) -> EvaluationModel:
        """The base with the global adapter."""
        return peft_evaluation(config, runtime, config.lora_rank, arrays)

    def export_arrays(
        self, config: RunConfig, arrays: Arrays, *, folder: Path, base_name: str
    ) -> dict[str, Any]:
        """The global adapter (and a trained projector) as a stock PEFT adapter."""
        rank = config.lora_rank
        save_peft_adapter(
            folder,
            arrays,
            rank=rank,
            scaling=config.scaling(rank),
            dropout=config.lora_dropout,
            base_name=base_name,
        )
        return {"kind": "peft", "rank": rank}

    def import_arrays(self, config: RunConfig, folder: Path) -> Arrays:
        """The adapter (and projector) of the PEFT export."""
        return read_peft_adapter(folder)


register(Finetune())

"""A method added from outside the package: FedProx in one file.

Li et al., "Federated Optimization in Heterogeneous Networks", MLSys 2020: Finetune
plus a proximal term ``mu / 2 * ||w - w_global||^2`` in each client's loss. The
README's "Adding a method" shows this file.
"""

import torch

from fcit_flower.methods.base import ClientSetup, ClientUpdate
from fcit_flower.methods.finetune import Finetune, peft_model, peft_update
from fcit_flower.methods.registry import register
from fcit_flower.models.adapters import lora_parameters
from fcit_flower.protocol import Arrays, split_projector

MU = 0.01


class FedProx(Finetune):
    name = "fedprox"

    def train_client(self, setup: ClientSetup, received: Arrays) -> ClientUpdate:
        config = setup.config
        model = peft_model(config, setup.runtime, config.lora_rank, received)
        params = lora_parameters(model)
        start = {k: p.detach().clone() for k, p in params.items()}

        def proximal() -> torch.Tensor:
            return MU / 2 * sum(((params[k] - start[k]) ** 2).sum() for k in params)

        projector = split_projector(received)[1]
        loss = setup.train(model, projector, loss_hook=proximal)
        return ClientUpdate(peft_update(model, projector), loss)

    def stage_files(self, strategy, evaluation) -> dict:
        return {"fedprox.json": {"mu": MU, "rounds": len(strategy.timings)}}


register(FedProx())

"""Centralized multi-task learning (MTL): the FCIT paper's upper reference.

Every stage learns every task: the pooled data of all tasks is split over the
clients once and each stage trains on the next ``1 / num_stages`` of every client's
share (:func:`fcit_flower.tasks.data.pooled_client_samples`), so the run takes the
same rounds, samples and optimizer steps as a Hom continual run with Finetune's
adapter. Only the final model is evaluated; every accuracy row holds its score.
"""

from __future__ import annotations

from pathlib import Path

from fcit_flower.config import RunConfig
from fcit_flower.methods.finetune import Finetune
from fcit_flower.methods.registry import register
from fcit_flower.tasks.data import pooled_client_samples
from fcit_flower.tasks.fcit_data import Sample
from fcit_flower.tasks.schedule import Schedule, mtl_schedule


class MultiTask(Finetune):
    """Finetune's adapter trained on all tasks at once."""

    name = "mtl"
    evaluated_once = True

    def schedule(self, continual: Schedule) -> Schedule:
        """Every stage, every client learns every task."""
        return mtl_schedule(continual)

    def client_samples(
        self, config: RunConfig, schedule: Schedule, root: Path, stage: int, client: int
    ) -> list[Sample]:
        """The stage's chunk of the client's share of the pooled data."""
        return pooled_client_samples(config, schedule, root, stage, client)


register(MultiTask())

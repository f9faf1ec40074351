"""The multi-task references: all tasks' data pooled, no continual stages.

- ``mtl`` (the FCIT paper's upper bound, "centralized MTL"): one rank-``lora-rank``
  LoRA trained in the ServerApp process itself, without any client, on the pooled
  training data of every task of the schedule for ``mtl-epochs`` epochs (a cosine
  schedule over all of them), then evaluated once. Its epoch count is chosen on
  the validation split (``python -m bench.bench_validation --part mtl``), never on
  test scores.
- ``mtl-fed`` (a federated pooled run, for reference): every stage, every client
  learns every task; the pooled data is split over the clients once and each stage
  trains on the next ``1 / num_stages`` of every client's share
  (:func:`fcit_flower.tasks.data.pooled_client_samples`), so it takes the same
  rounds, samples and optimizer steps as a Hom continual run of Finetune.

Both evaluate the final model only; every accuracy row holds its score.
"""

from __future__ import annotations

from logging import INFO
from pathlib import Path

from flwr.common import log

from fcit_flower.config import ConfigError, RunConfig
from fcit_flower.methods.finetune import Finetune, peft_model, peft_update
from fcit_flower.methods.registry import register
from fcit_flower.protocol import Arrays, split_projector
from fcit_flower.runtime import Runtime
from fcit_flower.tasks.data import config_load_task, pooled_client_samples
from fcit_flower.tasks.fcit_data import Sample
from fcit_flower.tasks.schedule import Schedule, mtl_schedule
from fcit_flower.threads import SERVER_TRAINING_THREADS, pinned_threads
from fcit_flower.training import train_adapter


class FederatedMultiTask(Finetune):
    """Finetune's adapter trained on all tasks at once, federated."""

    name = "mtl-fed"
    evaluated_once = True

    def schedule(self, continual: Schedule) -> Schedule:
        """Every stage, every client learns every task."""
        return mtl_schedule(continual)

    def client_samples(
        self, config: RunConfig, schedule: Schedule, root: Path, stage: int, client: int
    ) -> list[Sample]:
        """The stage's chunk of the client's share of the pooled data."""
        return pooled_client_samples(config, schedule, root, stage, client)


class MultiTask(Finetune):
    """The centralized multi-task upper bound (trained in the ServerApp)."""

    name = "mtl"
    evaluated_once = True

    def check_config(self, config: RunConfig) -> None:
        """No differential privacy: the server trains on every site's pooled data."""
        if config.dp != "off":
            raise ConfigError(
                f"dp={config.dp!r} is not supported by method={self.name!r}: "
                "it trains on the pooled data of every site in the ServerApp"
            )

    def central_training(
        self, config: RunConfig, runtime: Runtime, arrays: Arrays, stage: int
    ) -> Arrays | None:
        """Train on every task's pooled data at the first stage; keep it after."""
        if stage > 0:
            return arrays
        pool = [
            sample
            for task in runtime.schedule.tasks
            for sample in config_load_task(config, runtime.root, task, "train")
        ]
        log(
            INFO,
            "centralized multi-task training: %d samples of %d tasks, %d epochs",
            len(pool),
            len(runtime.schedule.tasks),
            config.mtl_epochs,
        )
        model = peft_model(config, runtime, config.lora_rank, arrays)
        # The projector travels in the arrays only when it is trained (as Finetune).
        projector = split_projector(arrays)[1]
        with pinned_threads(SERVER_TRAINING_THREADS):  # same model in any process
            loss = train_adapter(
                model,
                config,
                runtime.bundle,
                pool,
                projector,
                seed=config.seed,
                epochs=config.mtl_epochs,
            )
        log(INFO, "centralized multi-task training: mean loss %.4f", loss)
        return peft_update(model, projector)


register(FederatedMultiTask())
register(MultiTask())

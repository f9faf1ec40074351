"""What a continual-learning method provides: one class, both sides of the federation.

A method is one module holding a :class:`Method` subclass, registered with
:func:`fcit_flower.methods.registry.register`. The ServerApp and the ClientApp know
methods only through this interface:

- server: :meth:`Method.build_server` (the Flower strategy and the initial global
  arrays), :meth:`Method.evaluation_model` (the inference model of a global state,
  with an optional per-batch hook), :meth:`Method.stage_files` (extra result files),
  :meth:`Method.export_arrays` / :meth:`Method.import_arrays` (the files of an
  export, ``adapters/stage-<k>/``, and reading them back);
- client: :meth:`Method.train_client` (one local training step on a TRAIN message)
  and :meth:`Method.answer_query` (QUERY messages other than ``describe``);
- both: :meth:`Method.schedule` and :meth:`Method.client_samples` (which tasks and
  samples each client learns, when a method changes them), :meth:`Method.check_config`.

A ClientApp process never imports a server strategy: method modules import their
strategy inside :meth:`Method.build_server`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from flwr.app import ConfigRecord, RecordDict
from torch import nn

from fcit_flower.config import RunConfig
from fcit_flower.evaluation import EvaluationModel, StageEvaluation
from fcit_flower.export.tensors import read_arrays, save_arrays
from fcit_flower.models.adapters import init_lora_arrays, lora_shapes, projector_state
from fcit_flower.protocol import (
    KIND,
    SERVER_ROUND,
    STAGE,
    Arrays,
    ProtocolError,
    read_int,
)
from fcit_flower.runtime import Runtime
from fcit_flower.tasks import data
from fcit_flower.tasks.fcit_data import Sample
from fcit_flower.tasks.schedule import Schedule
from fcit_flower.training import train_adapter

if TYPE_CHECKING:  # the server side only
    from fcit_flower.strategies.continual import ContinualFedAvg, Federation


@dataclass(frozen=True)
class ServerSetup:
    """What a method's server side is built from.

    Attributes
    ----------
    config : RunConfig
        The run's config.
    runtime : Runtime
        Its data, schedule and base model.
    federation : Federation
        What every strategy takes: clients, round policy, server optimizer and
        the checkpoint hook.
    """

    config: RunConfig
    runtime: Runtime
    federation: Federation

    def lora_factors(self, rank: int) -> Callable[[int], Arrays]:
        """``init(k)``: seeded fresh factors of LoRA ``k`` (a subspace, a block)."""
        config = self.config
        shapes = lora_shapes(
            self.runtime.base_path, rank, config.scaling(rank), config.lora_dropout
        )
        return lambda k: init_lora_arrays(shapes, config.seed * 1000 + k)

    def projector(self) -> Arrays:
        """The base's projector when it is trained (it then travels), else nothing."""
        if not self.config.train_projector:
            return {}
        return projector_state(self.runtime.bundle.model)


@dataclass(frozen=True)
class ClientSetup:
    """What a method's client side gets for one message.

    Attributes
    ----------
    config, runtime
        As in :class:`ServerSetup`.
    request : ConfigRecord
        The message's config record (``stage``, ``server-round``, method keys).
    position : int
        This client's position.
    samples : Sequence[Sample]
        Its training samples for the request's stage.
    tasks : tuple of str
        The tasks it learns in that stage.
    """

    config: RunConfig
    runtime: Runtime
    request: ConfigRecord
    position: int
    samples: Sequence[Sample]
    tasks: tuple[str, ...]

    @property
    def seed(self) -> int:
        """Seed of this client's local training in this round."""
        stage = read_int(self.request, STAGE)
        server_round = read_int(self.request, SERVER_ROUND)
        return data.stable_seed(self.config.seed, stage, server_round, self.position)

    def train(
        self,
        model: nn.Module,
        projector: Arrays,
        loss_hook: Callable[[], torch.Tensor] | None = None,
    ) -> float:
        """:func:`~fcit_flower.training.train_adapter` of ``model`` on this client."""
        return train_adapter(
            model,
            self.config,
            self.runtime.bundle,
            self.samples,
            projector,
            seed=self.seed,
            loss_hook=loss_hook,
        )


@dataclass(frozen=True)
class ClientUpdate:
    """A client's result of one TRAIN message.

    Attributes
    ----------
    arrays : dict
        What goes back to the server.
    loss : float
        Mean local training loss.
    metrics : dict
        Further metrics of the reply (DISCO: the subspace it trained).
    """

    arrays: Arrays
    loss: float
    metrics: Mapping[str, int | float] = field(default_factory=dict)


class Method(ABC):
    """A continual-learning method: both sides, behind one small interface.

    Attributes
    ----------
    name : str
        The ``method`` run-config value it is registered under.
    trains : bool
        False for a method that never trains (zero-shot): no rounds are run.
    evaluated_once : bool
        True when only the final model is evaluated (every accuracy row then holds
        that score, as for the multi-task reference).
    """

    name: ClassVar[str]
    trains: ClassVar[bool] = True
    evaluated_once: ClassVar[bool] = False

    def check_config(self, config: RunConfig) -> None:  # noqa: B027 - optional hook
        """Raise :class:`~fcit_flower.config.ConfigError` for values it cannot use."""

    def schedule(self, continual: Schedule) -> Schedule:
        """Which tasks each client learns per stage (the continual schedule)."""
        return continual

    def client_samples(
        self, config: RunConfig, schedule: Schedule, root: Path, stage: int, client: int
    ) -> list[Sample]:
        """A client's training samples at a stage (its continual partition)."""
        return data.client_samples(config, schedule, root, stage, client)

    @abstractmethod
    def build_server(self, setup: ServerSetup) -> tuple[ContinualFedAvg, Arrays]:
        """The Flower strategy and the initial global arrays."""

    @abstractmethod
    def train_client(self, setup: ClientSetup, received: Arrays) -> ClientUpdate:
        """Local training on ``setup.samples`` from the ``received`` arrays."""

    def central_training(
        self, config: RunConfig, runtime: Runtime, arrays: Arrays, stage: int
    ) -> Arrays | None:
        """Train a stage without clients (a centralized reference).

        Returns the new global arrays; ``None`` (the default): the stage is
        federated.
        """
        return None

    def answer_query(self, setup: ClientSetup) -> RecordDict:
        """Reply to a QUERY message (other than ``describe``).

        Raises
        ------
        ProtocolError
            For a query kind the method does not know.
        """
        kind = setup.request.get(KIND)
        raise ProtocolError(f"method {self.name!r} answers no {kind!r} query")

    @abstractmethod
    def evaluation_model(
        self, config: RunConfig, runtime: Runtime, arrays: Arrays
    ) -> EvaluationModel:
        """The inference model of the global ``arrays``."""

    def stage_files(
        self, strategy: ContinualFedAvg, evaluation: StageEvaluation
    ) -> dict[str, Any]:
        """Extra JSON files written to the run directory after each evaluation."""
        return {}

    def export_arrays(
        self, config: RunConfig, arrays: Arrays, *, folder: Path, base_name: str
    ) -> dict[str, Any]:
        """Write the global ``arrays`` into an export ``folder``; their format.

        The default keeps every array under its run key in ``arrays.safetensors``
        (read back by :meth:`import_arrays`); a method whose adapter is a LoRA
        writes stock PEFT adapters instead. ``base_name`` is what an adapter
        config names as its base.
        """
        layout = {"kind": "arrays", "method": self.name}
        save_arrays(folder, arrays, layout)
        return layout

    def import_arrays(self, config: RunConfig, folder: Path) -> Arrays:
        """The global arrays of an export written by :meth:`export_arrays`."""
        return read_arrays(folder)

"""Server optimizers: Flower's own FedOpt strategies, applied per group of arrays.

``server-optimizer`` names a Flower strategy whose ``aggregate_train`` turns the
sample-weighted average into the new global arrays: an alias (``fedavgm``,
``fedadam``, ``fedadagrad``, ``fedyogi``), a class of ``flwr.serverapp.strategy``
(``FedYogi``), or the import path of a user's own subclass of Flower's ``FedOpt`` or
``FedAvgM`` (``my_package.rules.MyOpt``). The rules are Flower's (Reddi et al.,
"Adaptive Federated Optimization", ICLR 2021, Alg. 2; Hsu et al., 2019 for FedAvgM);
this module only drives them. ``fedavg`` (the default) has no Flower optimizer: the
new arrays are the average itself.

DISCO keeps one optimizer per subspace and O-LoRA / M-LoRA one per block, so one
Flower instance serves one group of arrays (:class:`OptimizerBank`). It is driven
through its public API only: its ``current_arrays`` are set to the group's arrays and
``aggregate_train`` gets one reply carrying the group's average (weight 1), so the
average is the reply itself.

Per stage (``server-optimizer-state``): ``reset`` starts every group at a new stage
from a fresh instance with rounds counted from 1, as a new Flower strategy started
for the stage would; ``keep`` carries moments and the step count across stages (the
FedAdam bias correction then counts every step of the run).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.app import Message, MetricRecord, RecordDict
from flwr.common import MessageType
from flwr.serverapp import strategy as flower_strategies
from flwr.serverapp.exception import AggregationError
from flwr.serverapp.strategy import FedAvg, FedAvgM
from flwr.serverapp.strategy.fedopt import FedOpt

from fcit_flower.config import (
    PLAIN_AVERAGE,
    SERVER_OPTIMIZER_ALIASES,
    ConfigError,
    RunConfig,
)
from fcit_flower.importing import import_object
from fcit_flower.protocol import (
    ARRAYS_KEY,
    METRICS_KEY,
    NUM_EXAMPLES,
    Arrays,
    strip_prefix,
    to_numpy,
    to_record,
)


def optimizer_class(name: str) -> type[FedAvg] | None:
    """The Flower strategy class ``name`` stands for (``None`` for ``fedavg``).

    Raises
    ------
    ConfigError
        When ``name`` cannot be imported or is no ``FedOpt`` / ``FedAvgM`` subclass.
    """
    if name == PLAIN_AVERAGE:
        return None
    target = SERVER_OPTIMIZER_ALIASES.get(name, name)
    found: Any = None
    if "." in target:
        found = import_object("server-optimizer", target)
    else:
        found = getattr(flower_strategies, target, None)
    if not (isinstance(found, type) and issubclass(found, FedOpt | FedAvgM)):
        raise ConfigError(
            f"server-optimizer={name!r} is not {PLAIN_AVERAGE!r}, one of "
            f"{sorted(SERVER_OPTIMIZER_ALIASES)}, or a subclass of Flower's FedOpt "
            "or FedAvgM (class name or import path)"
        )
    return found


@dataclass(frozen=True)
class ServerOptimizerSpec:
    """Which server optimizer, with which hyper-parameters.

    Parameters
    ----------
    name : str
        ``fedavg``, an alias, a Flower class name or an import path.
    lr : float
        Server learning rate (Flower's ``eta`` / ``server_learning_rate``).
    momentum : float
        FedAvgM momentum (``server_momentum``).
    beta1, beta2 : float
        Moment decays (``beta_1``, ``beta_2``).
    eps : float
        Adaptivity (Flower's ``tau``).
    per_stage : {"reset", "keep"}
        Whether a new stage starts from a fresh optimizer.
    """

    name: str = PLAIN_AVERAGE
    lr: float = 1.0
    momentum: float = 0.9
    beta1: float = 0.9
    beta2: float = 0.99
    eps: float = 1e-3
    per_stage: str = "reset"

    @classmethod
    def from_config(cls, config: RunConfig) -> ServerOptimizerSpec:
        """The spec of a run-config's ``server-*`` keys."""
        hyper: dict[str, Any] = {
            key: getattr(config, f"server_{key}")
            for key in ("lr", "momentum", "beta1", "beta2", "eps")
        }
        return cls(
            name=config.server_optimizer,
            per_stage=config.server_optimizer_state,
            **hyper,
        )

    def build(self) -> FedAvg | None:
        """A fresh Flower instance (``None`` for the plain average).

        Only the hyper-parameters its constructor takes are passed, so a user's
        class may take fewer (``FedAdagrad`` has no ``beta_1``).
        """
        found = optimizer_class(self.name)
        if found is None:
            return None
        offered = {
            "eta": self.lr,
            "server_learning_rate": self.lr,
            "server_momentum": self.momentum,
            "beta_1": self.beta1,
            "beta_2": self.beta2,
            "tau": self.eps,
        }
        accepted = inspect.signature(found).parameters
        kwargs: dict[str, Any] = {k: v for k, v in offered.items() if k in accepted}
        return found(**kwargs)


@contextmanager
def _flower_log_quiet() -> Iterator[None]:
    """Silence Flower's per-aggregation INFO lines (one per group and round)."""
    logger = logging.getLogger("flwr")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def _average_as_reply(averaged: Arrays) -> Message:
    """A TRAIN reply carrying ``averaged`` with weight 1 (its own average)."""
    content = RecordDict(
        {
            ARRAYS_KEY: to_record(averaged),
            METRICS_KEY: MetricRecord({NUM_EXAMPLES: 1}),
        }
    )
    request = Message(
        content=RecordDict(), dst_node_id=0, message_type=MessageType.TRAIN
    )
    return Message(content=content, reply_to=request)


class ServerOptimizer:
    """The server optimizer of one group of arrays, with its state.

    Parameters
    ----------
    spec : ServerOptimizerSpec
        Which optimizer.
    """

    def __init__(self, spec: ServerOptimizerSpec) -> None:
        self.spec = spec
        self.flower = spec.build()
        self.steps = 0  # steps since the last reset: the round Flower is told
        self.stage = -1

    def step(self, current: Arrays, averaged: Arrays, *, stage: int) -> Arrays:
        """New arrays of the group from its current and its averaged arrays.

        Each array keeps its dtype (an adaptive rate is a float64 scalar and would
        upcast float32 adapters, which every later upload would then fail to match).
        """
        if self.spec.per_stage == "reset" and stage != self.stage:
            self.flower, self.steps = self.spec.build(), 0
        self.stage = stage
        self.steps += 1
        if self.flower is None:
            updated = {k: np.asarray(v).copy() for k, v in averaged.items()}
        else:
            updated = self._flower_step(current, averaged)
        return {k: np.asarray(v, dtype=current[k].dtype) for k, v in updated.items()}

    def _flower_step(self, current: Arrays, averaged: Arrays) -> Arrays:
        keys = sorted(averaged)  # FedAvgM pairs arrays by position
        flower = self.flower
        if isinstance(flower, FedAvgM):
            flower.current_arrays = to_record({k: current[k] for k in keys})
        elif isinstance(flower, FedOpt):
            flower.current_arrays = {k: current[k] for k in keys}
        reply = _average_as_reply({k: averaged[k] for k in keys})
        assert flower is not None  # the plain average never gets here
        with _flower_log_quiet():
            record, _ = flower.aggregate_train(self.steps, [reply])
        if record is None:
            raise AggregationError(reason=f"{type(flower).__name__} returned nothing")
        return to_numpy(record)

    def state(self, prefix: str) -> tuple[Arrays, dict[str, Any]]:
        """The moments under ``prefix`` and the counters (for checkpoints).

        Moments are every array-valued attribute of the Flower instance (FedOpt's
        ``m_t`` and ``v_t``, FedAvgM's ``momentum_vector``, or a user class's own)
        except ``current_arrays``, which is set before every step.
        """
        arrays: Arrays = {}
        kinds: dict[str, Any] = {}
        for name, value in _moments(self.flower).items():
            if isinstance(value, dict):
                arrays.update({f"{prefix}{name}/{k}": v for k, v in value.items()})
                kinds[name] = "dict"
            else:
                arrays.update({f"{prefix}{name}/{i}": v for i, v in enumerate(value)})
                kinds[name] = len(value)
        return arrays, {"steps": self.steps, "stage": self.stage, "moments": kinds}

    def load_state(
        self, arrays: Mapping[str, np.ndarray], prefix: str, meta: Mapping[str, Any]
    ) -> None:
        """Restore what :meth:`state` returned."""
        self.flower = self.spec.build()
        self.steps, self.stage = int(meta["steps"]), int(meta["stage"])
        for name, kind in meta["moments"].items():
            mark = f"{prefix}{name}/"
            value: Any = (
                strip_prefix(arrays, mark)
                if kind == "dict"
                else [arrays[f"{mark}{i}"] for i in range(int(kind))]
            )
            setattr(self.flower, name, value)


def _moments(
    flower: FedAvg | None,
) -> dict[str, dict[str, np.ndarray] | list[np.ndarray]]:
    if flower is None:
        return {}
    found: dict[str, dict[str, np.ndarray] | list[np.ndarray]] = {}
    for name, value in vars(flower).items():
        if name == "current_arrays" or not value:
            continue
        if isinstance(value, dict) and all(
            isinstance(v, np.ndarray) for v in value.values()
        ):
            found[name] = value
        elif isinstance(value, list) and all(isinstance(v, np.ndarray) for v in value):
            found[name] = value
    return found


class OptimizerBank:
    """One :class:`ServerOptimizer` per named group of arrays, created on first use.

    Parameters
    ----------
    spec : ServerOptimizerSpec
        The optimizer every group gets.
    """

    def __init__(self, spec: ServerOptimizerSpec) -> None:
        self.spec = spec
        self.optimizers: dict[str, ServerOptimizer] = {}

    def step(
        self, group: str, current: Arrays, averaged: Arrays, *, stage: int
    ) -> Arrays:
        """:meth:`ServerOptimizer.step` of ``group``'s optimizer."""
        optimizer = self.optimizers.get(group)
        if optimizer is None:
            optimizer = self.optimizers[group] = ServerOptimizer(self.spec)
        return optimizer.step(current, averaged, stage=stage)

    def state(self, prefix: str) -> tuple[Arrays, dict[str, Any]]:
        """Every group's moments under ``prefix<group>/`` and their counters."""
        arrays: Arrays = {}
        meta: dict[str, Any] = {}
        for group, optimizer in self.optimizers.items():
            group_arrays, meta[group] = optimizer.state(f"{prefix}{group}/")
            arrays.update(group_arrays)
        return arrays, meta

    def load_state(
        self, arrays: Mapping[str, np.ndarray], prefix: str, meta: Mapping[str, Any]
    ) -> None:
        """Restore what :meth:`state` returned."""
        self.optimizers = {}
        for group, group_meta in meta.items():
            optimizer = ServerOptimizer(self.spec)
            optimizer.load_state(arrays, f"{prefix}{group}/", group_meta)
            self.optimizers[group] = optimizer

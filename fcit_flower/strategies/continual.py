"""Continual FedAvg: the Finetune baseline, and the base class of every strategy here.

A Flower ``FedAvg`` whose rounds know their stage: clients are sampled by position
with a generator seeded by (seed, stage, round), every upload is validated before
aggregation (:mod:`fcit_flower.strategies.uploads`), and the sample-weighted average
goes through a server optimizer (:mod:`fcit_flower.strategies.server_optim`).

Subclasses change a round through four hooks and call ``super()`` for the rest:
:meth:`ContinualFedAvg.begin_stage`, :meth:`~ContinualFedAvg.admit` (which sampled
clients train), :meth:`~ContinualFedAvg.client_arrays` /
:meth:`~ContinualFedAvg.instructions` (what each one gets), and
:meth:`~ContinualFedAvg.apply_uploads` (how valid uploads change the global state;
each group through :meth:`~ContinualFedAvg.average`, which under ``dp = "central"``
is the unweighted mean of clipped uploads plus noise: :mod:`fcit_flower.privacy`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from logging import INFO
from typing import Any, NamedTuple

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common import MessageType, log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from fcit_flower.config import RunConfig
from fcit_flower.privacy import PrivacySpec
from fcit_flower.protocol import (
    ARRAYS_KEY,
    ATTEMPT,
    CLIENT,
    CLIENT_SECONDS,
    CONFIG_KEY,
    NUM_EXAMPLES,
    ROUND_OFFSET,
    SERVER_ROUND,
    STAGE,
    Arrays,
    read_int,
    strip_prefix,
    to_numpy,
    to_record,
)
from fcit_flower.strategies.aggregation import weighted_average
from fcit_flower.strategies.privacy_ledger import PrivacyLedger
from fcit_flower.strategies.sampling import connected_clients, sample_clients
from fcit_flower.strategies.server_optim import OptimizerBank, ServerOptimizerSpec
from fcit_flower.strategies.uploads import (
    RoundPolicy,
    Upload,
    UploadCheck,
)
from fcit_flower.transport import encode_arrays


class StrategyState(NamedTuple):
    """Everything needed to continue a strategy: arrays and JSON metadata."""

    arrays: Arrays
    meta: dict[str, Any]


# Called with (stage, server round, the strategy's state) once a round is aggregated.
RoundEndHook = Callable[[int, int, StrategyState], None]


@dataclass(frozen=True)
class Federation:
    """What every strategy here is built on: its clients and how its rounds run.

    Attributes
    ----------
    node_clients : Mapping[int, int]
        Node id -> client position (partition id), collected at start.
    policy : RoundPolicy
        Sampling, retries and upload bounds of every round.
    optimizer : ServerOptimizerSpec
        Server optimizer applied to sample-weighted averages.
    on_round_end : RoundEndHook, optional
        Called once a round's aggregate is in the strategy's ``current`` arrays
        (the run's round checkpoint).
    privacy : PrivacySpec, optional
        Differential privacy of the uploads (``None``: off).
    """

    node_clients: Mapping[int, int]
    policy: RoundPolicy
    optimizer: ServerOptimizerSpec
    on_round_end: RoundEndHook | None = None
    privacy: PrivacySpec | None = None

    @classmethod
    def from_config(
        cls,
        config: RunConfig,
        node_clients: Mapping[int, int],
        on_round_end: RoundEndHook | None = None,
    ) -> Federation:
        """The federation of a run-config and its discovered clients."""
        return cls(
            node_clients,
            RoundPolicy.from_config(config),
            ServerOptimizerSpec.from_config(config),
            on_round_end,
            privacy=PrivacySpec.from_config(config),
        )


class ContinualFedAvg(FedAvg):
    """FedAvg over adapter arrays across continual stages.

    Parameters
    ----------
    federation : Federation
        Its clients, round policy, server optimizer and round-end hook.
    """

    def __init__(self, *, federation: Federation) -> None:
        super().__init__(
            fraction_evaluate=0.0,
            min_train_nodes=1,
            min_available_nodes=1,
            arrayrecord_key=ARRAYS_KEY,
            configrecord_key=CONFIG_KEY,
        )
        self.node_clients = dict(federation.node_clients)
        self.policy = federation.policy
        self.optimizers = OptimizerBank(federation.optimizer)
        self.on_round_end = federation.on_round_end
        self.privacy = (
            None if federation.privacy is None else PrivacyLedger(federation.privacy)
        )
        self.current: Arrays = {}
        self.uploads = UploadCheck(self.policy, self.node_clients)
        # Per round: wall seconds, client handler seconds (sum, max), aggregation.
        self.timings: list[dict[str, Any]] = []
        self._round_started = 0.0
        self._round_clients: dict[int, int] = {}
        self._lost: set[int] = set()  # client positions not connected
        self._round_config = ConfigRecord()
        self._grid: Grid | None = None
        self._stage = -1

    @property
    def rejected(self) -> list[dict[str, Any]]:
        """Rejected uploads and failed clients so far (see :class:`UploadCheck`)."""
        return self.uploads.rejected

    def summary(self) -> None:
        """Log the strategy's settings."""
        log(
            INFO,
            "\t├── %s: %d clients per round, server optimizer %s (%s per stage)",
            type(self).__name__,
            self.policy.clients_per_round,
            self.optimizers.spec.name,
            self.optimizers.spec.per_stage,
        )

    def begin_stage(self, stage: int) -> None:
        """Called before the first round of a stage (the new stage number)."""

    def admit(
        self, picked: list[tuple[int, int]], server_round: int, grid: Grid
    ) -> list[tuple[int, int]]:
        """The sampled (node, position) pairs that train this round (all of them)."""
        return picked

    def client_arrays(self, position: int) -> Arrays:
        """The arrays sent to one client (all global arrays for FedAvg)."""
        return self.current

    def instructions(self, position: int) -> dict[str, int | bool]:
        """Method-specific config keys for one client (none for FedAvg)."""
        return {}

    def client_config(self, position: int, config: ConfigRecord) -> ConfigRecord:
        """The config sent to one client (a copy: Flower's own is shared)."""
        out = ConfigRecord(dict(config))
        out[CLIENT] = position
        out.update(self.instructions(position))
        return out

    def expected_upload(self, position: int) -> Arrays:
        """What a client's upload must match (keys, shapes): what it was sent."""
        return self.client_arrays(position)

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """One TRAIN message per sampled client, with its arrays and config.

        ``config`` holds the stage (:data:`~fcit_flower.protocol.STAGE`) and, for a
        resumed stage, the rounds already done (``ROUND_OFFSET``): Flower's round
        ``r`` is then the stage's round ``r + offset``.
        """
        config = ConfigRecord(dict(config))
        server_round += read_int(config, ROUND_OFFSET, 0)
        config.pop(ROUND_OFFSET, None)
        self._round_started = time.perf_counter()
        if not self.current:
            self.current = to_numpy(arrays)
        config[SERVER_ROUND] = server_round
        self._grid = grid
        self._round_config = config
        stage = read_int(config, STAGE)
        if stage != self._stage:
            self.begin_stage(stage)
        self._stage = stage
        where = f"stage {stage + 1} round {server_round}"
        available, self._lost = connected_clients(
            self.node_clients,
            set(grid.get_node_ids()),
            self._lost,
            minimum=self.policy.min_clients_per_round,
            where=where,
        )
        picked = sample_clients(
            available,
            self.policy.clients_per_round,
            minimum=self.policy.min_clients_per_round,
            seed=self.policy.seed,
            stage=stage,
            server_round=server_round,
        )
        if self.privacy is not None:  # before anything leaves the server
            self.privacy.check_budget(
                stage=stage, server_round=server_round, available=len(available)
            )
        log(INFO, "configure_train: %s clients %s", where, [p for _, p in picked])
        self._round_clients = dict(self.admit(picked, server_round, grid))
        sent = [self._train_message(n, p, 0) for n, p in self._round_clients.items()]
        self.uploads.sent_messages = list(sent)  # Flower's grids set their ids
        return sent

    def _train_message(self, node: int, position: int, attempt: int) -> Message:
        config = self.client_config(position, self._round_config)
        config[ATTEMPT] = attempt
        arrays = encode_arrays(
            self.client_arrays(position), transport=self.policy.transport_dtype
        )
        content = RecordDict({ARRAYS_KEY: arrays, CONFIG_KEY: config})
        return Message(
            content=content, dst_node_id=node, message_type=MessageType.TRAIN
        )

    def inspect_reply(self, position: int, upload: Upload) -> str | None:
        """Method-specific checks of an upload that passed the common ones."""
        return None

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Validate uploads, retry failed clients if too few, then aggregate.

        Raises
        ------
        RoundFailedError
            If fewer than ``min_clients_per_round`` valid uploads arrived after
            ``max_round_retries`` retries; the global arrays are left as they were.
        """
        server_round = read_int(self._round_config, SERVER_ROUND)  # + the offset
        aggregation_started = time.perf_counter()
        assert self._grid is not None  # set by configure_train
        uploads = self.uploads.collect(
            self._stage,
            server_round,
            list(replies),
            self._round_clients,
            expected=self.expected_upload,
            inspect=self.inspect_reply,
            resend=lambda node, attempt: self._train_message(
                node, self._round_clients[node], attempt
            ),
            grid=self._grid,
            # A 16-bit upload is the client's update; added to what was sent in
            # float32, the global's own rounding never reaches the aggregate.
            sent=self.client_arrays,
        )
        if self.privacy is None:
            self.apply_uploads(uploads)
        else:
            self.apply_private(server_round, uploads)
        self.record_timing(server_round, uploads, aggregation_started)
        if self.on_round_end is not None:
            self.on_round_end(self._stage, server_round, self.state())
        return to_record(self.current), mean_metrics(uploads)

    def apply_uploads(self, uploads: list[Upload]) -> None:
        """Sample-weighted average of the uploads, then a server-optimizer step."""
        averaged = self.average(
            "global", [u.arrays for u in uploads], [u.weight for u in uploads]
        )
        self.current = self.optimizers.step(
            "global", self.current, averaged, stage=self._stage
        )

    def average(
        self, group: str, arrays: list[Arrays], weights: list[float]
    ) -> dict[str, np.ndarray]:
        """The average of one group (adapter, subspace, block, projector).

        Under central DP the uploads arrive clipped with weight 1 (the unweighted
        mean) and the group gets its own seeded noise (:class:`PrivacyLedger`).
        """
        averaged = weighted_average(arrays, weights)
        if self.privacy is None or self.privacy.spec.mode != "central":
            return averaged
        return self.privacy.noised(
            averaged,
            group=group,
            count=len(arrays),
            stage=self._stage,
            server_round=read_int(self._round_config, SERVER_ROUND),
        )

    def apply_private(self, server_round: int, uploads: list[Upload]) -> None:
        """Average the uploads under DP, then account the round.

        Central: each upload is clipped first (:meth:`PrivacyLedger.clip`) and each
        group noised (:meth:`average`); local: the clients did both.
        """
        assert self.privacy is not None  # only called under DP
        scaled = 0  # local DP: the clients clip, unseen here
        if self.privacy.spec.mode == "central":
            uploads, scaled = self.privacy.clip(uploads, self.expected_upload)
        self.apply_uploads(uploads)
        self.privacy.record(
            stage=self._stage,
            server_round=server_round,
            clipped=scaled,
            uploads=len(uploads),
        )

    def record_timing(
        self, server_round: int, uploads: list[Upload], aggregation_started: float
    ) -> None:
        """Remember where the round's wall time went (see ``bench/``)."""
        now = time.perf_counter()
        client = [float(u.metrics.get(CLIENT_SECONDS, 0.0)) for u in uploads]  # type: ignore[arg-type]
        self.timings.append(
            {
                "stage": self._stage,
                "round": server_round,
                "round_seconds": round(now - self._round_started, 3),
                "client_seconds_sum": round(sum(client), 3),
                "client_seconds_max": round(max(client), 3),
                "aggregate_seconds": round(now - aggregation_started, 4),
            }
        )

    def state(self) -> StrategyState:
        """Everything needed to continue this strategy (for checkpoints)."""
        arrays = {f"global/{k}": v for k, v in self.current.items()}
        optimizer_arrays, optimizer_meta = self.optimizers.state("optimizer/")
        arrays.update(optimizer_arrays)
        meta = {
            "stage": self._stage,
            "optimizers": optimizer_meta,
            "rejected": self.rejected,
            "timings": self.timings,
        }
        if self.privacy is not None:
            meta["privacy"] = self.privacy.state()
        return StrategyState(arrays, meta)

    def load_state(
        self, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]
    ) -> None:
        """Restore what :meth:`state` returned."""
        self.current = strip_prefix(arrays, "global/")
        self.optimizers.load_state(arrays, "optimizer/", meta["optimizers"])
        self._stage = int(meta["stage"])
        self.uploads.rejected = list(meta["rejected"])
        self.timings = list(meta.get("timings", []))
        if self.privacy is not None:
            self.privacy.load_state(meta["privacy"])


def mean_metrics(uploads: list[Upload]) -> MetricRecord:
    """Sample-weighted mean of the numeric client metrics (and the total count)."""
    total = sum(u.weight for u in uploads)
    keys = {k for u in uploads for k in u.metrics if k != NUM_EXAMPLES}
    out: dict[str, float] = {NUM_EXAMPLES: float(total)}
    for key in sorted(keys):
        values = [
            (float(u.metrics[key]), u.weight)  # type: ignore[arg-type]
            for u in uploads
            if key in u.metrics
        ]
        out[key] = sum(v * w for v, w in values) / sum(w for _, w in values)
    return MetricRecord(out)  # type: ignore[arg-type]

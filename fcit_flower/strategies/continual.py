"""Continual FedAvg: the Finetune baseline, and the base class of DISCO.

A Flower ``FedAvg`` whose rounds know their stage: clients are sampled by position
with a generator seeded by (seed, stage, round), every upload is validated before
aggregation, and the sample-weighted average goes through a pluggable server
optimizer (FedAvg, FedAvgM, FedAdam, FedAdagrad, FedYogi).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from logging import INFO, WARNING
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common import MessageType, log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from fcit_flower.strategies.aggregation import upload_problem, weighted_average
from fcit_flower.strategies.server_optim import ServerOptimizer

ARRAYS_KEY = "arrays"
CONFIG_KEY = "config"
METRICS_KEY = "metrics"
NUM_EXAMPLES = "num-examples"

# A validated upload: (client position, arrays, sample count, metrics).
Upload = tuple[int, dict[str, np.ndarray], float, MetricRecord]


class RoundFailedError(RuntimeError):
    """Too few valid uploads in a round, even after retrying the failed clients."""


def to_numpy(record: ArrayRecord) -> dict[str, np.ndarray]:
    """ArrayRecord -> dict of numpy arrays."""
    return {k: v.numpy() for k, v in record.items()}


def to_record(arrays: Mapping[str, np.ndarray]) -> ArrayRecord:
    """Dict of numpy arrays -> ArrayRecord (float32 kept as is)."""
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in arrays.items()})


def sample_clients(
    available: Mapping[int, int], k: int, *, seed: int, stage: int, server_round: int
) -> list[tuple[int, int]]:
    """Pick ``k`` (node id, client position) pairs, seeded by stage and round.

    Positions are sampled, not node ids, so the same seed picks the same clients in
    simulation and deployment whatever ids the nodes got.
    """
    positions = sorted(available.values())
    if len(positions) < k:
        raise RuntimeError(f"{len(positions)} clients available, {k} needed per round")
    rng = np.random.default_rng([seed, stage, server_round])
    chosen = sorted(rng.choice(positions, size=k, replace=False).tolist())
    node_of = {pos: node for node, pos in available.items()}
    return [(node_of[p], p) for p in chosen]


class ContinualFedAvg(FedAvg):
    """FedAvg over adapter arrays across continual stages.

    Parameters
    ----------
    node_clients : Mapping[int, int]
        Node id -> client position (partition id), collected at start.
    clients_per_round : int
        Clients sampled per round.
    seed : int
        Seed of the client sampling.
    optimizer : ServerOptimizer
        Server-side update rule applied to the sample-weighted average.
    max_norm_ratio : float
        Reject uploads whose distance to the global arrays exceeds this multiple of
        the global norm (0 disables the check).
    min_uploads : int
        Valid uploads a round needs; below it the failed clients are asked again.
    max_retries : int
        How often a round re-sends to its failed clients before giving up with
        :class:`RoundFailedError`.
    round_timeout : float
        Seconds a retry waits for replies.
    max_num_examples : int
        Uploads claiming more samples are rejected.
    """

    def __init__(
        self,
        *,
        node_clients: Mapping[int, int],
        clients_per_round: int,
        seed: int,
        optimizer: ServerOptimizer,
        max_norm_ratio: float = 0.0,
        min_uploads: int = 1,
        max_retries: int = 0,
        round_timeout: float = 3600.0,
        max_num_examples: int = 1_000_000,
    ) -> None:
        super().__init__(
            fraction_evaluate=0.0,
            min_train_nodes=1,
            min_available_nodes=1,
            arrayrecord_key=ARRAYS_KEY,
            configrecord_key=CONFIG_KEY,
        )
        self.node_clients = dict(node_clients)
        self.clients_per_round = clients_per_round
        self.seed = seed
        self.optimizer = optimizer
        self.max_norm_ratio = max_norm_ratio
        self.min_uploads = min_uploads
        self.max_retries = max_retries
        self.round_timeout = round_timeout
        self.max_num_examples = max_num_examples
        self.current: dict[str, np.ndarray] = {}
        self.rejected: list[dict[str, Any]] = []
        # Per round: wall seconds, client handler seconds (sum, max), aggregation.
        self.timings: list[dict[str, Any]] = []
        self._round_started = 0.0
        # Rounds already done in the stage (a resumed stage starts after them).
        self.round_offset = 0
        # Called with (stage, round) once a round's aggregate is in `current`.
        self.on_round_end: Callable[[int, int], None] | None = None
        self._round_clients: dict[int, int] = {}
        self._round_config = ConfigRecord()
        self._grid: Grid | None = None
        self._stage = -1

    def summary(self) -> None:
        """Log the strategy's settings."""
        log(
            INFO,
            "\t├── %s: %d clients per round, server optimizer %s",
            type(self).__name__,
            self.clients_per_round,
            self.optimizer.name,
        )

    def select(
        self, server_round: int, config: ConfigRecord, grid: Grid
    ) -> list[tuple[int, int]]:
        """Sample this round's (node, position) pairs among connected nodes."""
        stage = int(config["stage"])  # type: ignore[arg-type]
        connected = set(grid.get_node_ids())
        available = {n: p for n, p in self.node_clients.items() if n in connected}
        picked = sample_clients(
            available,
            self.clients_per_round,
            seed=self.seed,
            stage=stage,
            server_round=server_round,
        )
        self._stage = stage
        self._round_clients = dict(picked)
        log(
            INFO,
            "configure_train: stage %d round %d clients %s",
            stage + 1,
            server_round,
            [p for _, p in picked],
        )
        return picked

    def client_arrays(self, position: int) -> dict[str, np.ndarray]:
        """The arrays sent to one client (all global arrays for FedAvg)."""
        return self.current

    def client_config(self, position: int, config: ConfigRecord) -> ConfigRecord:
        """The config sent to one client (a copy: Flower's own is shared)."""
        out = ConfigRecord(dict(config))
        out["client"] = position
        return out

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """One TRAIN message per sampled client, with its arrays and config."""
        server_round += self.round_offset
        self._round_started = time.perf_counter()
        if not self.current:
            self.current = to_numpy(arrays)
        config = ConfigRecord(dict(config))
        config["server-round"] = server_round
        self._grid = grid
        self._round_config = config
        picked = self.select(server_round, config, grid)
        return [self._train_message(node, position, 0) for node, position in picked]

    def _train_message(self, node: int, position: int, attempt: int) -> Message:
        config = self.client_config(position, self._round_config)
        config["attempt"] = attempt
        content = RecordDict(
            {ARRAYS_KEY: to_record(self.client_arrays(position)), CONFIG_KEY: config}
        )
        return Message(
            content=content, dst_node_id=node, message_type=MessageType.TRAIN
        )

    def valid_uploads(
        self,
        server_round: int,
        replies: Iterable[Message],
        expected: Iterable[int] = (),
    ) -> tuple[list[Upload], list[int]]:
        """Check the replies; return the valid uploads and the nodes that failed.

        Uploads are (position, arrays, weight, metrics). Errors, missing replies
        (nodes in ``expected`` that did not answer) and bad uploads are logged with
        their reason and recorded in :attr:`rejected`; they never reach the
        aggregate, and their nodes are returned as failed (candidates for a retry).
        """
        replies = list(replies)
        valid, _ = self._check_and_log_replies(replies, is_train=True, validate=False)
        uploads = []
        failed = []
        for reply in valid:
            position = self.node_clients.get(reply.metadata.src_node_id, -1)
            reason, arrays, weight, metrics = self.inspect_reply(position, reply)
            if reason is not None:
                self.reject(server_round, position, reason)
                failed.append(reply.metadata.src_node_id)
                continue
            uploads.append((position, arrays, weight, metrics))
        for reply in replies:
            if reply.has_error():
                node = reply.metadata.src_node_id
                failed.append(node)
                self.reject(
                    server_round,
                    self.node_clients.get(node, -1),
                    f"client error: {reply.error.reason}",
                    kind="error",
                )
        answered = {r.metadata.src_node_id for r in replies}
        for node in expected:
            if node not in answered:
                failed.append(node)
                self.reject(
                    server_round,
                    self.node_clients.get(node, -1),
                    "no reply before the round timeout",
                    kind="no-reply",
                )
        return uploads, failed

    def inspect_reply(
        self, position: int, reply: Message
    ) -> tuple[str | None, dict[str, np.ndarray], float, MetricRecord]:
        """Validate one reply; return (problem or None, arrays, weight, metrics)."""
        content = reply.content
        if ARRAYS_KEY not in content or METRICS_KEY not in content:
            return "reply lacks arrays or metrics", {}, 0.0, MetricRecord()
        metrics = content.metric_records[METRICS_KEY]
        arrays = to_numpy(content.array_records[ARRAYS_KEY])
        weight = float(metrics.get(NUM_EXAMPLES, 0))  # type: ignore[arg-type]
        if not weight > 0 or not np.isfinite(weight):
            return f"num-examples={weight} is not positive", arrays, weight, metrics
        if weight > self.max_num_examples:
            too_many = f"num-examples={weight:g} exceeds {self.max_num_examples}"
            return too_many, arrays, weight, metrics
        if position not in self._round_clients.values():
            return "reply from a client not sampled this round", arrays, weight, metrics
        problem = upload_problem(
            arrays,
            self.expected_upload(position),
            max_norm_ratio=self.max_norm_ratio,
        )
        return problem, arrays, weight, metrics

    def expected_upload(self, position: int) -> dict[str, np.ndarray]:
        """What a client's upload must match (keys, shapes): what it was sent."""
        return self.client_arrays(position)

    def reject(
        self, server_round: int, position: int, reason: str, kind: str = "invalid"
    ) -> None:
        """Log and record a rejected upload or a failed client.

        ``kind`` is ``invalid`` (the upload failed validation), ``error`` (the
        client raised) or ``no-reply`` (it timed out or vanished).
        """
        what = "rejected upload" if kind == "invalid" else "client failed"
        log(
            WARNING,
            "%s: stage %d round %d client %d: %s",
            what,
            self._stage + 1,
            server_round,
            position,
            reason,
        )
        self.rejected.append(
            {
                "stage": self._stage,
                "round": server_round,
                "client": position,
                "kind": kind,
                "reason": reason,
            }
        )

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Validate uploads, retry failed clients if too few, then aggregate.

        Raises
        ------
        RoundFailedError
            If fewer than ``min_uploads`` valid uploads arrived after
            ``max_retries`` retries; the global arrays are left as they were.
        """
        server_round += self.round_offset
        aggregation_started = time.perf_counter()
        uploads, failed = self.valid_uploads(
            server_round, replies, expected=self._round_clients
        )
        failed = [n for n in failed if n in self._round_clients]  # ours to retry
        attempt = 0
        while len(uploads) < self.min_uploads and failed and attempt < self.max_retries:
            attempt += 1
            log(
                WARNING,
                "stage %d round %d: %d valid uploads, %d needed; retry %d/%d for "
                "clients %s",
                self._stage + 1,
                server_round,
                len(uploads),
                self.min_uploads,
                attempt,
                self.max_retries,
                [self.node_clients.get(n, -1) for n in failed],
            )
            assert self._grid is not None  # set by configure_train
            retry = [
                self._train_message(n, self._round_clients[n], attempt) for n in failed
            ]
            replies = self._grid.send_and_receive(retry, timeout=self.round_timeout)
            more, failed = self.valid_uploads(server_round, replies, expected=failed)
            uploads += more
        if len(uploads) < self.min_uploads:
            raise RoundFailedError(
                f"stage {self._stage + 1} round {server_round}: {len(uploads)} valid "
                f"uploads after {attempt} retries, min-clients-per-round="
                f"{self.min_uploads}; the last checkpoint can be resumed"
            )
        self.apply_uploads(uploads)
        self.record_timing(server_round, uploads, aggregation_started)
        if self.on_round_end is not None:
            self.on_round_end(self._stage, server_round)
        return to_record(self.current), mean_metrics(uploads)

    def apply_uploads(self, uploads: list[Upload]) -> None:
        """Sample-weighted average of the uploads, then a server-optimizer step."""
        averaged = weighted_average([u[1] for u in uploads], [u[2] for u in uploads])
        self.current = self.optimizer.step(self.current, averaged)

    def record_timing(
        self, server_round: int, uploads: list[Upload], aggregation_started: float
    ) -> None:
        """Remember where the round's wall time went (see ``bench/``)."""
        now = time.perf_counter()
        client = [float(u[3].get("client-seconds", 0.0)) for u in uploads]  # type: ignore[arg-type]
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

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Everything needed to continue this strategy: (arrays, JSON metadata)."""
        arrays = {f"global/{k}": v for k, v in self.current.items()}
        arrays.update(self.optimizer.state_arrays("optimizer/"))
        meta = {
            "stage": self._stage,
            "optimizer_steps": self.optimizer.step_count,
            "rejected": self.rejected,
            "timings": self.timings,
        }
        return arrays, meta

    def load_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        """Restore what :meth:`state` returned."""
        prefix = "global/"
        self.current = {
            k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)
        }
        self.optimizer.load_state_arrays(
            arrays, "optimizer/", int(meta["optimizer_steps"])
        )
        self._stage = int(meta["stage"])
        self.rejected = list(meta["rejected"])
        self.timings = list(meta.get("timings", []))


def mean_metrics(uploads: list[Upload]) -> MetricRecord:
    """Sample-weighted mean of the numeric client metrics (and the total count)."""
    total = sum(u[2] for u in uploads)
    keys = {k for u in uploads for k in u[3] if k != NUM_EXAMPLES}
    out: dict[str, float] = {NUM_EXAMPLES: float(total)}
    for key in sorted(keys):
        values = [(float(u[3][key]), u[2]) for u in uploads if key in u[3]]  # type: ignore[arg-type]
        out[key] = sum(v * w for v, w in values) / sum(w for _, w in values)
    return MetricRecord(out)  # type: ignore[arg-type]

"""A round's replies: validated, bad ones logged and recorded, failed clients retried.

Every reply is checked in one place before any aggregation (the role of Flower's
``FedAvg`` reply check, with the checks a continual run needs): it must carry
arrays and metrics, a positive sample count within bounds, come from a client
sampled this round, arrive in the run's ``transport-dtype``
(:func:`~fcit_flower.transport.decode_arrays`), and match what that client was sent
(keys, shapes, dtypes, finite values, bounded update norm;
:func:`~fcit_flower.strategies.aggregation.upload_problem`). Errors, missing
replies and bad uploads are logged with their reason and recorded; they never reach
the aggregate. When fewer than ``min-clients-per-round`` valid uploads arrive, the
failed clients are asked again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from logging import INFO, WARNING
from typing import Any, NamedTuple

import numpy as np
from flwr.app import Message, MetricRecord
from flwr.common import log
from flwr.serverapp import Grid

from fcit_flower.config import RunConfig
from fcit_flower.protocol import ARRAYS_KEY, METRICS_KEY, NUM_EXAMPLES, Arrays
from fcit_flower.strategies.aggregation import upload_problem
from fcit_flower.strategies.sampling import RoundFailedError, reply_source
from fcit_flower.transport import TransportError, decode_arrays


class Upload(NamedTuple):
    """A validated upload.

    Attributes
    ----------
    position : int
        The client position that sent it.
    arrays : dict
        Its arrays.
    weight : float
        Its sample count (the aggregation weight).
    metrics : MetricRecord
        Its metrics.
    """

    position: int
    arrays: Arrays
    weight: float
    metrics: MetricRecord


@dataclass(frozen=True)
class RoundPolicy:
    """How a round samples clients, which uploads it accepts and how it retries.

    The fields are the run-config keys of the same names (``clients-per-round``,
    ``min-clients-per-round``, ...).

    Parameters
    ----------
    clients_per_round : int
        Clients sampled per round.
    seed : int
        Seed of the client sampling.
    min_clients_per_round : int
        Valid uploads a round needs; below it the failed clients are asked again.
    max_round_retries : int
        How often a round re-sends to its failed clients before giving up with
        :class:`RoundFailedError`.
    round_timeout : float
        Seconds a retry waits for replies.
    max_update_norm : float
        Reject uploads whose distance to the reference exceeds this multiple of the
        reference norm (0 disables the check).
    max_num_examples : int
        Uploads claiming more samples are rejected.
    transport_dtype : {"float32", "bfloat16", "float16"}
        The format arrays travel in; an upload in another one is rejected.
    """

    clients_per_round: int
    seed: int
    min_clients_per_round: int = 1
    max_round_retries: int = 0
    round_timeout: float = 3600.0
    max_update_norm: float = 0.0
    max_num_examples: int = 1_000_000
    transport_dtype: str = "float32"

    @classmethod
    def from_config(cls, config: RunConfig) -> RoundPolicy:
        """The policy of a run-config: the values of its keys of these names.

        Under local DP the update-norm check is off: every honest upload carries
        noise far longer than any update, and the clients bound their updates.
        """
        values = {f.name: getattr(config, f.name) for f in fields(cls)}
        if config.dp == "local":
            values["max_update_norm"] = 0.0
        return cls(**values)


class UploadCheck:
    """Validation of replies, the record of rejections, and retries.

    Parameters
    ----------
    policy : RoundPolicy
        Bounds and retries.
    node_clients : Mapping[int, int]
        Node id -> client position.
    """

    def __init__(self, policy: RoundPolicy, node_clients: Mapping[int, int]) -> None:
        self.policy = policy
        self.node_clients = node_clients
        self.rejected: list[dict[str, Any]] = []
        # The round's sent messages: Flower's grids give them their ids in place.
        self.sent_messages: list[Message] = []

    def destinations(self) -> dict[str, int]:
        """Message id -> destination node of this round's sent messages."""
        return {
            m.metadata.message_id: m.metadata.dst_node_id
            for m in self.sent_messages
            if m.metadata.message_id  # a grid that gives no ids (in-process)
        }

    def reject(
        self,
        stage: int,
        server_round: int,
        position: int,
        reason: str,
        kind: str = "invalid",
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
            stage + 1,
            server_round,
            position,
            reason,
        )
        self.rejected.append(
            {
                "stage": stage,
                "round": server_round,
                "client": position,
                "kind": kind,
                "reason": reason,
            }
        )

    def inspect(
        self,
        position: int,
        reply: Message,
        sampled: Mapping[int, int],
        expected: Arrays,
        sent: Arrays | None = None,
    ) -> tuple[str | None, Upload]:
        """The common checks of one reply: (problem or ``None``, the upload).

        ``sent`` is what the client was sent (float32): a 16-bit upload carries
        its difference from it (:mod:`fcit_flower.transport`).
        """
        content = reply.content
        empty = Upload(position, {}, 0.0, MetricRecord())
        if ARRAYS_KEY not in content or METRICS_KEY not in content:
            return "reply lacks arrays or metrics", empty
        metrics = content.metric_records[METRICS_KEY]
        try:
            arrays = decode_arrays(
                content.array_records[ARRAYS_KEY],
                transport=self.policy.transport_dtype,
                reference=sent,
            )
        except TransportError as error:
            return str(error), empty._replace(metrics=metrics)
        weight = float(metrics.get(NUM_EXAMPLES, 0))  # type: ignore[arg-type]
        upload = Upload(position, arrays, weight, metrics)
        if not weight > 0 or not np.isfinite(weight):
            return f"num-examples={weight} is not positive", upload
        if weight > self.policy.max_num_examples:
            limit = self.policy.max_num_examples
            return f"num-examples={weight:g} exceeds {limit}", upload
        if position not in sampled.values():
            return "reply from a client not sampled this round", upload
        problem = upload_problem(
            arrays, expected, max_norm_ratio=self.policy.max_update_norm
        )
        return problem, upload

    def check(
        self,
        stage: int,
        server_round: int,
        replies: list[Message],
        sampled: Mapping[int, int],
        *,
        waited_for: Mapping[int, int],
        expected: Callable[[int], Arrays],
        inspect: Callable[[int, Upload], str | None],
        sent: Callable[[int], Arrays] | None = None,
    ) -> tuple[list[Upload], list[int]]:
        """The valid uploads among ``replies`` and the nodes that failed.

        Nodes of ``waited_for`` that did not answer count as failed (no reply).
        ``inspect`` adds a strategy's own checks to an upload that passed these;
        ``sent(position)`` is what a client was sent (for 16-bit uploads).
        """
        errors = [r for r in replies if r.has_error()]
        log(
            INFO,
            "aggregate_train: stage %d round %d: %d replies, %d failures",
            stage + 1,
            server_round,
            len(replies) - len(errors),
            len(errors),
        )
        uploads, failed = [], []
        destinations = self.destinations()
        for reply in replies:
            if reply.has_error():
                continue
            node = reply.metadata.src_node_id
            position = self.node_clients.get(node, -1)
            reference = None
            if sent is not None and position in sampled.values():
                reference = sent(position)
            problem, upload = self.inspect(
                position, reply, sampled, expected(position), reference
            )
            if problem is None:
                problem = inspect(position, upload)
            if problem is not None:
                self.reject(stage, server_round, position, problem)
                failed.append(node)
                continue
            uploads.append(upload)
        for reply in errors:
            node = reply_source(reply, destinations, self.node_clients)
            failed.append(node)
            reason = f"client error: {reply.error.reason}"
            self.reject(
                stage, server_round, self.node_clients.get(node, -1), reason, "error"
            )
        answered = {reply_source(r, destinations, self.node_clients) for r in replies}
        for node in waited_for:
            if node not in answered:
                failed.append(node)
                self.reject(
                    stage,
                    server_round,
                    self.node_clients.get(node, -1),
                    "no reply before the round timeout",
                    kind="no-reply",
                )
        return uploads, failed

    def collect(
        self,
        stage: int,
        server_round: int,
        replies: list[Message],
        sampled: Mapping[int, int],
        *,
        expected: Callable[[int], Arrays],
        inspect: Callable[[int, Upload], str | None],
        resend: Callable[[int, int], Message],
        grid: Grid,
        sent: Callable[[int], Arrays] | None = None,
    ) -> list[Upload]:
        """The round's valid uploads, retrying failed clients while too few.

        ``resend(node, attempt)`` builds the TRAIN message of a retry; ``sent`` as
        in :meth:`check`.

        Raises
        ------
        RoundFailedError
            If fewer than ``min-clients-per-round`` valid uploads arrived after
            ``max_retries`` retries.
        """
        policy = self.policy
        uploads, failed = self.check(
            stage,
            server_round,
            replies,
            sampled,
            waited_for=sampled,
            expected=expected,
            inspect=inspect,
            sent=sent,
        )
        failed = [n for n in failed if n in sampled]  # ours to retry
        attempt = 0
        while (
            len(uploads) < policy.min_clients_per_round
            and failed
            and attempt < policy.max_round_retries
        ):
            attempt += 1
            log(
                WARNING,
                "stage %d round %d: %d valid uploads, %d needed; retry %d/%d for "
                "clients %s",
                stage + 1,
                server_round,
                len(uploads),
                policy.min_clients_per_round,
                attempt,
                policy.max_round_retries,
                [self.node_clients.get(n, -1) for n in failed],
            )
            retry = [resend(n, attempt) for n in failed]
            self.sent_messages += retry  # their ids are set when they are sent
            answers = list(grid.send_and_receive(retry, timeout=policy.round_timeout))
            more, failed = self.check(
                stage,
                server_round,
                answers,
                sampled,
                waited_for={n: sampled[n] for n in failed},
                expected=expected,
                inspect=inspect,
                sent=sent,
            )
            uploads += more
        if len(uploads) < policy.min_clients_per_round:
            raise RoundFailedError(
                f"stage {stage + 1} round {server_round}: {len(uploads)} valid "
                f"uploads after {attempt} retries, min-clients-per-round="
                f"{policy.min_clients_per_round}"
            )
        return uploads

"""DISCO strategy: Dynamic Knowledge Organization on the Flower server.

Guo et al., "Federated Continual Instruction Tuning" (ICCV 2025), Sec. 4.2. The global
state is one ``ArrayRecord`` holding, per occupied slot ``k``, the subspace's LoRA
factors, its identity token and the sample mass behind that token, plus the shared
projector (layout in :mod:`fcit_flower.protocol`). Each round:

1. ``configure_train``: sample clients; clients not yet assigned in this stage send
   their identity token (a QUERY message, no training cost); the tokens are matched
   greedily to slots at ``tau`` (new slot below it); each client receives only its
   subspace (and the projector).
2. ``aggregate_train``: uploads are validated, grouped by subspace, averaged by sample
   count, and each subspace takes its own server-optimizer step.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from logging import INFO, WARNING
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.common import MessageType, log
from flwr.serverapp import Grid

from fcit_flower.protocol import (
    ARRAYS_KEY,
    CONFIG_KEY,
    IDENTITY_TOKEN,
    KIND,
    METRICS_KEY,
    NUM_EXAMPLES,
    STAGE,
    SUBSPACE,
    TOKEN_KEY,
    Arrays,
    occupied_slots,
    slot_prefix,
    split_projector,
    subspace_arrays,
    token_key,
    token_weight_key,
)
from fcit_flower.strategies.aggregation import token_problem
from fcit_flower.strategies.continual import (
    ContinualFedAvg,
    Federation,
    StrategyState,
)
from fcit_flower.strategies.matching import MatchResult, TokenSlots
from fcit_flower.strategies.uploads import Upload


def slots_from_arrays(
    arrays: Mapping[str, np.ndarray], capacity: int, tau: float
) -> TokenSlots:
    """Rebuild the token cache from a global state (the state is the truth)."""
    slots = TokenSlots(capacity=capacity, tau=tau)
    for k in range(occupied_slots(arrays)):
        slots.tokens.append(np.asarray(arrays[token_key(k)], dtype=np.float64))
        slots.weights.append(float(arrays[token_weight_key(k)][0]))
    return slots


class Disco(ContinualFedAvg):
    """DISCO: identity-token slots and subspace-wise, sample-weighted aggregation.

    Parameters
    ----------
    federation : Federation
        As :class:`ContinualFedAvg`; every subspace and the projector get their
        own server optimizer.
    num_subspaces : int
        E, slots available.
    tau : float
        Cosine threshold for joining a slot.
    token_dim : int
        Expected identity-token dimension.
    init_subspace : Callable[[int], dict]
        Fresh LoRA factors for a newly opened slot (seeded by slot index).
    max_token_norm : float
        Identity tokens longer than this are rejected (0 disables the check).
    query_timeout : float, optional
        Seconds to wait for identity tokens; default: the run's ``round-timeout``
        (a site that builds its base first may need long).
    client_tasks : Callable[[int, int], Sequence[str]], optional
        ``(stage, client position) -> tasks`` from the run's schedule, for the
        routing diagnostics only (``routing.json``, logs); clients never send
        their task names.
    """

    def __init__(
        self,
        *,
        federation: Federation,
        num_subspaces: int,
        tau: float,
        token_dim: int,
        init_subspace: Callable[[int], Arrays],
        max_token_norm: float = 0.0,
        query_timeout: float | None = None,
        client_tasks: Callable[[int, int], Sequence[str]] | None = None,
    ) -> None:
        super().__init__(federation=federation)
        self.client_tasks = client_tasks
        self.num_subspaces = num_subspaces
        self.tau = tau
        self.token_dim = token_dim
        self.max_token_norm = max_token_norm
        self.init_subspace = init_subspace
        self.query_timeout = (
            self.policy.round_timeout if query_timeout is None else query_timeout
        )
        self.assignment: dict[int, int] = {}
        self.routing: list[dict[str, Any]] = []

    def summary(self) -> None:
        """Log the strategy's settings."""
        super().summary()
        log(INFO, "\t└── DISCO: %d subspaces, tau=%.3f", self.num_subspaces, self.tau)

    def begin_stage(self, stage: int) -> None:
        """Slots are assigned afresh in every stage."""
        self.assignment = {}

    def admit(
        self, picked: list[tuple[int, int]], server_round: int, grid: Grid
    ) -> list[tuple[int, int]]:
        """Assign the unassigned clients to slots by token; keep the assigned ones."""
        newcomers = [(n, p) for n, p in picked if p not in self.assignment]
        if newcomers:
            self._assign(grid, newcomers, server_round)
        return [(n, p) for n, p in picked if p in self.assignment]

    def _assign(
        self, grid: Grid, newcomers: list[tuple[int, int]], server_round: int
    ) -> None:
        stage = self._stage
        # The ledger of noised tokens (token-noise > 0), else None.
        tokens = self.privacy
        if tokens is not None and not tokens.spec.token_noise:
            tokens = None
        if tokens is not None:  # before any token leaves a site
            tokens.check_tokens(
                stage=stage,
                server_round=server_round,
                positions=[p for _, p in newcomers],
            )
        query = [
            Message(
                content=RecordDict(
                    {CONFIG_KEY: ConfigRecord({KIND: IDENTITY_TOKEN, STAGE: stage})}
                ),
                dst_node_id=node,
                message_type=MessageType.QUERY,
            )
            for node, _ in newcomers
        ]
        replies = {
            r.metadata.src_node_id: r
            for r in grid.send_and_receive(query, timeout=self.query_timeout)
        }
        if tokens is not None:  # every token that left a site counts, used or not
            tokens.release_tokens(
                stage=stage,
                server_round=server_round,
                positions=[
                    p
                    for n, p in newcomers
                    if n in replies and not replies[n].has_error()
                ],
            )
        slots = slots_from_arrays(self.current, self.num_subspaces, self.tau)
        for node, position in newcomers:
            reply = replies.get(node)
            if reply is None or reply.has_error():
                reason = reply.error.reason if reply is not None else "no reply"
                self.uploads.reject(
                    stage,
                    server_round,
                    position,
                    f"identity token query failed: {reason}",
                    kind="error" if reply is not None else "no-reply",
                )
                continue
            token = reply.content.array_records[ARRAYS_KEY][TOKEN_KEY].numpy()
            size = float(reply.content.metric_records[METRICS_KEY][NUM_EXAMPLES])  # type: ignore[arg-type]
            problem = token_problem(token, self.token_dim, max_norm=self.max_token_norm)
            if problem is None and not size > 0:
                problem = f"num-examples={size} is not positive"
            if problem is not None:
                self.uploads.reject(stage, server_round, position, problem)
                continue
            result = slots.match(token, size)
            if result.opened:
                for key, value in self.init_subspace(result.slot).items():
                    self.current[slot_prefix(result.slot) + key] = value
            tasks = self.client_tasks(stage, position) if self.client_tasks else ()
            self._route(position, "+".join(tasks), result, server_round)
        for k, (token, weight) in enumerate(
            zip(slots.tokens, slots.weights, strict=True)
        ):
            self.current[token_key(k)] = token.astype(np.float32)
            self.current[token_weight_key(k)] = np.array([weight], dtype=np.float64)

    def _route(
        self, position: int, tasks: str, result: MatchResult, server_round: int
    ) -> None:
        """Record (and log) where one client went."""
        if result.overflow:
            log(
                WARNING,
                "all %d subspaces taken: client %d merged into slot %d "
                "(cosine %.3f < tau)",
                self.num_subspaces,
                position,
                result.slot,
                result.similarity,
            )
        self.assignment[position] = result.slot
        self.routing.append(
            {
                "stage": self._stage,
                "round": server_round,
                "client": position,
                "tasks": tasks,
                "slot": result.slot,
                "similarity": round(result.similarity, 4),
                "opened": result.opened,
                "overflow": result.overflow,
            }
        )
        log(
            INFO,
            "DKO: client %d (%s) -> subspace %d (cos %.3f%s)",
            position,
            tasks or "?",
            result.slot,
            result.similarity,
            ", new" if result.opened else "",
        )

    def client_arrays(self, position: int) -> Arrays:
        """Only the client's subspace and the shared projector travel."""
        slot = self.assignment[position]
        projector = split_projector(self.current)[1]
        return {**subspace_arrays(self.current, slot), **projector}

    def instructions(self, position: int) -> dict[str, int | bool]:
        """The client's assigned subspace."""
        return {SUBSPACE: self.assignment[position]}

    def inspect_reply(self, position: int, upload: Upload) -> str | None:
        """Reject uploads that claim another subspace than assigned."""
        claimed = upload.metrics.get(SUBSPACE, -1)
        assigned = self.assignment.get(position)
        if not isinstance(claimed, int | float) or int(claimed) != self.assignment.get(
            position, -2
        ):
            return f"upload for subspace {claimed}, assigned {assigned}"
        return None

    def apply_uploads(self, uploads: list[Upload]) -> None:
        """Average per subspace by sample count; projector over all clients."""
        by_slot: dict[int, list[tuple[Arrays, float]]] = {}
        for upload in uploads:
            by_slot.setdefault(self.assignment[upload.position], []).append(
                (split_projector(upload.arrays)[0], upload.weight)
            )
        for slot, group in sorted(by_slot.items()):
            current = subspace_arrays(self.current, slot)
            averaged = self.average(
                f"slot{slot}", [g[0] for g in group], [g[1] for g in group]
            )
            stepped = self.optimizers.step(
                f"slot{slot}", current, averaged, stage=self._stage
            )
            for key, value in stepped.items():
                self.current[slot_prefix(slot) + key] = value
        projector = split_projector(self.current)[1]
        if projector:
            averaged = self.average(
                "projector",
                [{k: u.arrays[k] for k in projector} for u in uploads],
                [u.weight for u in uploads],
            )
            self.current.update(
                self.optimizers.step(
                    "projector", projector, averaged, stage=self._stage
                )
            )

    def slot_tokens(self) -> list[np.ndarray]:
        """The global identity token of every occupied slot."""
        return slots_from_arrays(self.current, self.num_subspaces, self.tau).tokens

    def state(self) -> StrategyState:
        """Add the stage's slot assignment and the routing log."""
        state = super().state()
        state.meta["assignment"] = {str(p): s for p, s in self.assignment.items()}
        state.meta["routing"] = self.routing
        return state

    def load_state(
        self, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]
    ) -> None:
        """Restore what :meth:`state` returned."""
        super().load_state(arrays, meta)
        self.assignment = {int(p): int(s) for p, s in meta["assignment"].items()}
        self.routing = list(meta["routing"])


def routing_report(
    routing: list[dict[str, Any]],
    tokens: list[np.ndarray],
    mean_activation: Mapping[str, list[float]],
    top_slots: Mapping[str, Mapping[str, list[int]]] | None = None,
) -> dict[str, Any]:
    """Which slot each client/task went to, routing accuracy, and SSA weights.

    A client is routed correctly when its slot's majority task is its own task.
    A test item is routed correctly at inference when the slot SSA weights most
    (``top_slots``: task -> phrasing -> slot per item) has its task among the
    slot's majority tasks; reported per task, for all items and per phrasing.
    """
    owners: dict[int, dict[str, int]] = {}
    for entry in routing:
        owners.setdefault(entry["slot"], {}).setdefault(entry["tasks"], 0)
        owners[entry["slot"]][entry["tasks"]] += 1
    majority = {slot: max(c, key=c.__getitem__) for slot, c in owners.items()}
    correct = sum(1 for e in routing if majority[e["slot"]] == e["tasks"])
    task_slots: dict[str, set[int]] = {}
    for entry in routing:
        task_slots.setdefault(entry["tasks"], set()).add(entry["slot"])
    test_routing = {
        task: {
            kind: round(
                float(np.mean([task in majority.get(s, "").split("+") for s in slots])),
                4,
            )
            for kind, slots in groups.items()
            if slots
        }
        for task, groups in (top_slots or {}).items()
    }
    return {
        "assignments": routing,
        "slot_majority_task": {str(k): v for k, v in majority.items()},
        "routing_accuracy": correct / len(routing) if routing else None,
        "test_routing_accuracy": test_routing,
        "tasks_split_over_slots": {
            t: sorted(s) for t, s in task_slots.items() if len(s) > 1
        },
        "mean_ssa_activation": dict(mean_activation),
        "slot_tokens": [[round(float(v), 6) for v in token] for token in tokens],
    }

"""DISCO strategy: Dynamic Knowledge Organization on the Flower server.

Guo et al., "Federated Continual Instruction Tuning" (ICCV 2025), Sec. 4.2. The global
state is one ``ArrayRecord`` holding, per occupied slot ``k``, the subspace's LoRA
factors (``slot{k}/<key>``), its identity token (``token/slot{k}``) and the sample
mass behind that token (``token-weight/slot{k}``), plus the shared projector (plain
keys, FedAvg-style). Each round:

1. ``configure_train``: sample clients; clients not yet assigned in this stage send
   their identity token (a QUERY message, no training cost); the tokens are matched
   greedily to slots at ``tau`` (new slot below it); each client receives only its
   subspace (and the projector).
2. ``aggregate_train``: uploads are validated, grouped by subspace, averaged by sample
   count, and each subspace takes its own server-optimizer step.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from logging import INFO, WARNING
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common import MessageType, log
from flwr.serverapp import Grid

from fcit_flower.strategies.aggregation import token_problem, weighted_average
from fcit_flower.strategies.continual import (
    ARRAYS_KEY,
    CONFIG_KEY,
    METRICS_KEY,
    NUM_EXAMPLES,
    ContinualFedAvg,
    Upload,
)
from fcit_flower.strategies.matching import TokenSlots
from fcit_flower.strategies.server_optim import ServerOptimizer

TOKEN_KEY = "identity-token"
INFO_KEY = "info"
PROJECTOR_MARK = "multi_modal_projector"


def slot_prefix(slot: int) -> str:
    """Key prefix of a slot's LoRA factors."""
    return f"slot{slot}/"


def slots_from_arrays(
    arrays: Mapping[str, np.ndarray], capacity: int, tau: float
) -> TokenSlots:
    """Rebuild the token cache from a global state (the state is the truth)."""
    slots = TokenSlots(capacity=capacity, tau=tau)
    k = 0
    while f"token/slot{k}" in arrays:
        slots.tokens.append(np.asarray(arrays[f"token/slot{k}"], dtype=np.float64))
        slots.weights.append(float(arrays[f"token-weight/slot{k}"][0]))
        k += 1
    return slots


def subspace_arrays(
    arrays: Mapping[str, np.ndarray], slot: int
) -> dict[str, np.ndarray]:
    """LoRA factors of one slot, keys without the slot prefix."""
    prefix = slot_prefix(slot)
    return {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}


def projector_arrays(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The shared (non-subspace) arrays: the multimodal projector."""
    return {k: v for k, v in arrays.items() if PROJECTOR_MARK in k and "/" not in k}


class Disco(ContinualFedAvg):
    """DISCO: identity-token slots and subspace-wise, sample-weighted aggregation.

    Parameters
    ----------
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
    query_timeout : float
        Seconds to wait for identity tokens.
    **kwargs
        The keyword arguments of :class:`ContinualFedAvg`.
    """

    def __init__(
        self,
        *,
        num_subspaces: int,
        tau: float,
        token_dim: int,
        init_subspace: Callable[[int], dict[str, np.ndarray]],
        optimizer: ServerOptimizer,
        max_token_norm: float = 0.0,
        query_timeout: float = 600.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(optimizer=optimizer, **kwargs)
        self.num_subspaces = num_subspaces
        self.tau = tau
        self.token_dim = token_dim
        self.max_token_norm = max_token_norm
        self.init_subspace = init_subspace
        self.query_timeout = query_timeout
        self.assignment: dict[int, int] = {}
        self.slot_optimizers: dict[int, ServerOptimizer] = {}
        self._fresh_optimizer = copy.deepcopy(optimizer)  # never stepped
        self.routing: list[dict[str, Any]] = []

    def summary(self) -> None:
        """Log the strategy's settings."""
        super().summary()
        log(INFO, "\t└── DISCO: %d subspaces, tau=%.3f", self.num_subspaces, self.tau)

    def select(
        self, server_round: int, config: ConfigRecord, grid: Grid
    ) -> list[tuple[int, int]]:
        """Sample clients, then assign the unassigned ones to slots by token."""
        stage = int(config["stage"])  # type: ignore[arg-type]
        if stage != self._stage:
            self.assignment = {}
        picked = super().select(server_round, config, grid)
        newcomers = [(n, p) for n, p in picked if p not in self.assignment]
        if newcomers:
            self._assign(grid, newcomers, stage, server_round)
        kept = [(n, p) for n, p in picked if p in self.assignment]
        self._round_clients = dict(kept)
        return kept

    def _assign(
        self,
        grid: Grid,
        newcomers: list[tuple[int, int]],
        stage: int,
        server_round: int,
    ) -> None:
        query = [
            Message(
                content=RecordDict(
                    {CONFIG_KEY: ConfigRecord({"kind": TOKEN_KEY, "stage": stage})}
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
        slots = slots_from_arrays(self.current, self.num_subspaces, self.tau)
        for node, position in newcomers:
            reply = replies.get(node)
            if reply is None or reply.has_error():
                reason = reply.error.reason if reply is not None else "no reply"
                self.reject(
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
                self.reject(server_round, position, problem)
                continue
            result = slots.match(token, size)
            if result.opened:
                for key, value in self.init_subspace(result.slot).items():
                    self.current[slot_prefix(result.slot) + key] = value
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
            info = reply.content.config_records.get(INFO_KEY, ConfigRecord())
            self.routing.append(
                {
                    "stage": stage,
                    "round": server_round,
                    "client": position,
                    "tasks": str(info.get("tasks", "")),
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
                info.get("tasks", "?"),
                result.slot,
                result.similarity,
                ", new" if result.opened else "",
            )
        for k, (token, weight) in enumerate(
            zip(slots.tokens, slots.weights, strict=True)
        ):
            self.current[f"token/slot{k}"] = token.astype(np.float32)
            self.current[f"token-weight/slot{k}"] = np.array([weight], dtype=np.float64)

    def client_arrays(self, position: int) -> dict[str, np.ndarray]:
        """Only the client's subspace and the shared projector travel."""
        slot = self.assignment[position]
        return {**subspace_arrays(self.current, slot), **projector_arrays(self.current)}

    def client_config(self, position: int, config: ConfigRecord) -> ConfigRecord:
        """Add the assigned subspace to the client's config."""
        out = super().client_config(position, config)
        out["subspace"] = self.assignment[position]
        return out

    def inspect_reply(
        self, position: int, reply: Message
    ) -> tuple[str | None, dict[str, np.ndarray], float, MetricRecord]:
        """Also reject uploads that claim another subspace than assigned."""
        problem, arrays, weight, metrics = super().inspect_reply(position, reply)
        if problem is None:
            claimed = metrics.get("subspace", -1)
            if not isinstance(claimed, int | float) or int(
                claimed
            ) != self.assignment.get(position, -2):
                assigned = self.assignment.get(position)
                problem = f"upload for subspace {claimed}, assigned {assigned}"
        return problem, arrays, weight, metrics

    def apply_uploads(self, uploads: list[Upload]) -> None:
        """Average per subspace by sample count; projector over all clients."""
        by_slot: dict[int, list[tuple[dict[str, np.ndarray], float]]] = {}
        for position, arrays, weight, _ in uploads:
            by_slot.setdefault(self.assignment[position], []).append(
                ({k: v for k, v in arrays.items() if PROJECTOR_MARK not in k}, weight)
            )
        for slot, group in sorted(by_slot.items()):
            current = subspace_arrays(self.current, slot)
            averaged = weighted_average([g[0] for g in group], [g[1] for g in group])
            optimizer = self.slot_optimizers.setdefault(
                slot, copy.deepcopy(self._fresh_optimizer)
            )
            for key, value in optimizer.step(current, averaged).items():
                self.current[slot_prefix(slot) + key] = value
        projector = projector_arrays(self.current)
        if projector:
            averaged = weighted_average(
                [{k: a[k] for k in projector} for _, a, _, _ in uploads],
                [w for _, _, w, _ in uploads],
            )
            self.current.update(self.optimizer.step(projector, averaged))

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Add the stage's slot assignment, routing log and subspace optimizers."""
        arrays, meta = super().state()
        for slot, optimizer in self.slot_optimizers.items():
            arrays.update(optimizer.state_arrays(f"slot-optimizer/{slot}/"))
        meta["assignment"] = {str(p): s for p, s in self.assignment.items()}
        meta["routing"] = self.routing
        meta["slot_optimizer_steps"] = {
            str(s): o.step_count for s, o in self.slot_optimizers.items()
        }
        return arrays, meta

    def load_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        """Restore what :meth:`state` returned."""
        super().load_state(arrays, meta)
        self.assignment = {int(p): int(s) for p, s in meta["assignment"].items()}
        self.routing = list(meta["routing"])
        self.slot_optimizers = {}
        for slot, steps in meta["slot_optimizer_steps"].items():
            optimizer = copy.deepcopy(self._fresh_optimizer)
            optimizer.load_state_arrays(arrays, f"slot-optimizer/{slot}/", int(steps))
            self.slot_optimizers[int(slot)] = optimizer

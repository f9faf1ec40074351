"""Server side of the EWC, O-LoRA and M-LoRA baselines (issue 6).

Both are :class:`ContinualFedAvg` (sample-weighted FedAvg of what the clients train,
then the server optimizer) and override only what differs:

- :class:`Ewc` also sends the anchor ``theta*`` and the accumulated Fisher ``F`` in
  later stages, asks the clients of a stage's last round for their Fisher, and
  consolidates ``(theta*, F)`` after that round.
- :class:`BlockLora` keeps one LoRA block per stage, sends the blocks trained so
  far, and averages only the current stage's block (plus the projector when it is
  trained). MoELoRA needs no strategy of its own.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np
from flwr.app import ConfigRecord
from flwr.serverapp import Grid

from fcit_flower.methods.ewc import (
    ANCHOR_PREFIX,
    ESTIMATE_FISHER,
    FISHER_PREFIX,
    split_ewc,
)
from fcit_flower.methods.lora_blocks import block_arrays, block_prefix
from fcit_flower.models.adapters import PROJECTOR, split_projector
from fcit_flower.strategies.aggregation import weighted_average
from fcit_flower.strategies.continual import ContinualFedAvg, Upload
from fcit_flower.strategies.server_optim import ServerOptimizer


class Ewc(ContinualFedAvg):
    """Finetune plus EWC's per-stage consolidation of Fisher and anchor.

    Parameters
    ----------
    rounds_per_stage : int
        Rounds of a stage; in the last one clients also upload their Fisher.
    **kwargs
        As :class:`ContinualFedAvg`.
    """

    def __init__(self, *, rounds_per_stage: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.rounds_per_stage = rounds_per_stage
        self.anchor: dict[str, np.ndarray] = {}
        self.fisher: dict[str, np.ndarray] = {}
        self._fisher_round = False

    def _last_round(self, config: ConfigRecord) -> bool:
        return int(config["server-round"]) == self.rounds_per_stage  # type: ignore[arg-type]

    def client_arrays(self, position: int) -> dict[str, np.ndarray]:
        """The global adapter, plus ``theta*`` and ``F`` once a stage is done."""
        return {
            **self.current,
            **{ANCHOR_PREFIX + k: v for k, v in self.anchor.items()},
            **{FISHER_PREFIX + k: v for k, v in self.fisher.items()},
        }

    def client_config(self, position: int, config: ConfigRecord) -> ConfigRecord:
        """Flag the stage's last round: clients then estimate their Fisher."""
        out = super().client_config(position, config)
        out[ESTIMATE_FISHER] = self._last_round(config)
        return out

    def select(
        self, server_round: int, config: ConfigRecord, grid: Grid
    ) -> list[tuple[int, int]]:
        """Remember whether this round asks for Fisher uploads."""
        self._fisher_round = self._last_round(config)
        return super().select(server_round, config, grid)

    def expected_upload(self, position: int) -> dict[str, np.ndarray]:
        """The adapter (and projector), plus its Fisher in a stage's last round."""
        expected = dict(self.current)
        if self._fisher_round:
            adapter, _ = split_projector(self.current)
            # Fisher is new information: its reference (for a norm check) is zero.
            expected.update(
                {FISHER_PREFIX + k: np.zeros_like(v) for k, v in adapter.items()}
            )
        return expected

    def apply_uploads(self, uploads: list[Upload]) -> None:
        """FedAvg of the adapters; in a last round, consolidate Fisher and anchor."""
        plain = [(p, split_ewc(a)[0], w, m) for p, a, w, m in uploads]
        super().apply_uploads(plain)
        fishers = [split_ewc(a)[2] for _, a, _, _ in uploads]
        if all(fishers):
            stage_fisher = weighted_average(fishers, [u[2] for u in uploads])
            for key, value in stage_fisher.items():
                self.fisher[key] = self.fisher.get(key, 0.0) + value
            adapter, _ = split_projector(self.current)
            self.anchor = {k: v.copy() for k, v in adapter.items()}

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Add the anchor and the accumulated Fisher (for checkpoints)."""
        arrays, meta = super().state()
        arrays.update({"ewc/" + ANCHOR_PREFIX + k: v for k, v in self.anchor.items()})
        arrays.update({"ewc/" + FISHER_PREFIX + k: v for k, v in self.fisher.items()})
        return arrays, meta

    def load_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        """Restore what :meth:`state` returned."""
        super().load_state(arrays, meta)
        for target, prefix in (
            (self.anchor, ANCHOR_PREFIX),
            (self.fisher, FISHER_PREFIX),
        ):
            target.clear()
            mark = "ewc/" + prefix
            target.update(
                {k[len(mark) :]: v for k, v in arrays.items() if k.startswith(mark)}
            )


class BlockLora(ContinualFedAvg):
    """One LoRA block per stage; only the current block is trained and averaged.

    Parameters
    ----------
    init_block : callable
        ``init_block(k)`` -> fresh factors of block ``k`` (keys without prefix).
    **kwargs
        As :class:`ContinualFedAvg`.
    """

    def __init__(
        self, *, init_block: Callable[[int], dict[str, np.ndarray]], **kwargs
    ) -> None:
        super().__init__(**kwargs)
        self.init_block = init_block
        self._fresh_optimizer = copy.deepcopy(self.optimizer)
        self.block_optimizers: dict[int, ServerOptimizer] = {}

    def select(
        self, server_round: int, config: ConfigRecord, grid: Grid
    ) -> list[tuple[int, int]]:
        """Open the stage's block (fresh factors) the first time the stage runs."""
        picked = super().select(server_round, config, grid)
        if not block_arrays(self.current, self._stage):
            prefix = block_prefix(self._stage)
            for key, value in self.init_block(self._stage).items():
                self.current[prefix + key] = value
        return picked

    def client_config(self, position: int, config: ConfigRecord) -> ConfigRecord:
        """Name the block to train."""
        out = super().client_config(position, config)
        out["block"] = self._stage
        return out

    def expected_upload(self, position: int) -> dict[str, np.ndarray]:
        """The current block (and the projector when it travels)."""
        prefix = block_prefix(self._stage)
        return {
            k: v
            for k, v in self.current.items()
            if k.startswith(prefix) or PROJECTOR in k
        }

    def apply_uploads(self, uploads: list[Upload]) -> None:
        """Average the current block (own optimizer state) and the projector."""
        prefix = block_prefix(self._stage)
        weights = [u[2] for u in uploads]
        averaged = weighted_average([u[1] for u in uploads], weights)
        block = {k: v for k, v in averaged.items() if k.startswith(prefix)}
        optimizer = self.block_optimizers.setdefault(
            self._stage, copy.deepcopy(self._fresh_optimizer)
        )
        current = {k: self.current[k] for k in block}
        self.current.update(optimizer.step(current, block))
        _, projector = split_projector(averaged)
        if projector:
            now = {k: self.current[k] for k in projector}
            self.current.update(self.optimizer.step(now, projector))

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Add each block's server-optimizer state (for checkpoints)."""
        arrays, meta = super().state()
        for block, optimizer in self.block_optimizers.items():
            arrays.update(optimizer.state_arrays(f"block-optimizer/{block}/"))
        meta["block_optimizer_steps"] = {
            str(b): o.step_count for b, o in self.block_optimizers.items()
        }
        return arrays, meta

    def load_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        """Restore what :meth:`state` returned."""
        super().load_state(arrays, meta)
        self.block_optimizers = {}
        for block, steps in meta["block_optimizer_steps"].items():
            optimizer = copy.deepcopy(self._fresh_optimizer)
            optimizer.load_state_arrays(arrays, f"block-optimizer/{block}/", int(steps))
            self.block_optimizers[int(block)] = optimizer

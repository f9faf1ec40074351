"""Server side of EWC: Finetune plus a per-stage consolidation of Fisher and anchor.

Kirkpatrick et al., "Overcoming catastrophic forgetting in neural networks", PNAS
2017 (the client side, and the loss, are in :mod:`fcit_flower.methods.ewc`). In
later stages the server also sends the anchor ``theta*`` and the accumulated Fisher
``F``; it asks the clients of a stage's last round for their Fisher and, after that
round, sets ``F <- F + F_stage`` (the sample-weighted mean of theirs) and ``theta*``
to the new global adapter.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from flwr.serverapp import Grid

from fcit_flower.protocol import (
    ANCHOR_PREFIX,
    ESTIMATE_FISHER,
    FISHER_PREFIX,
    Arrays,
    split_ewc,
    split_projector,
    strip_prefix,
)
from fcit_flower.strategies.aggregation import weighted_average
from fcit_flower.strategies.continual import (
    ContinualFedAvg,
    Federation,
    StrategyState,
)
from fcit_flower.strategies.uploads import Upload


class Ewc(ContinualFedAvg):
    """Finetune plus EWC's per-stage consolidation of Fisher and anchor.

    Parameters
    ----------
    federation : Federation
        As :class:`ContinualFedAvg`.
    rounds_per_stage : int
        Rounds of a stage; in the last one clients also upload their Fisher.
    """

    def __init__(
        self,
        *,
        federation: Federation,
        rounds_per_stage: int,
    ) -> None:
        super().__init__(federation=federation)
        self.rounds_per_stage = rounds_per_stage
        self.anchor: Arrays = {}
        self.fisher: Arrays = {}
        self._fisher_round = False

    def admit(
        self, picked: list[tuple[int, int]], server_round: int, grid: Grid
    ) -> list[tuple[int, int]]:
        """Remember whether this round asks for Fisher uploads."""
        self._fisher_round = server_round == self.rounds_per_stage
        return picked

    def client_arrays(self, position: int) -> Arrays:
        """The global adapter, plus ``theta*`` and ``F`` once a stage is done."""
        return {
            **self.current,
            **{ANCHOR_PREFIX + k: v for k, v in self.anchor.items()},
            **{FISHER_PREFIX + k: v for k, v in self.fisher.items()},
        }

    def instructions(self, position: int) -> dict[str, int | bool]:
        """Flag the stage's last round: clients then estimate their Fisher."""
        return {ESTIMATE_FISHER: self._fisher_round}

    def expected_upload(self, position: int) -> Arrays:
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
        plain = [u._replace(arrays=split_ewc(u.arrays)[0]) for u in uploads]
        super().apply_uploads(plain)
        fishers = [split_ewc(u.arrays)[2] for u in uploads]
        if all(fishers):
            stage_fisher = weighted_average(fishers, [u.weight for u in uploads])
            for key, value in stage_fisher.items():
                self.fisher[key] = self.fisher.get(key, 0.0) + value
            adapter, _ = split_projector(self.current)
            self.anchor = {k: v.copy() for k, v in adapter.items()}

    def state(self) -> StrategyState:
        """Add the anchor and the accumulated Fisher (for checkpoints)."""
        state = super().state()
        state.arrays.update(
            {"ewc/" + ANCHOR_PREFIX + k: v for k, v in self.anchor.items()}
        )
        state.arrays.update(
            {"ewc/" + FISHER_PREFIX + k: v for k, v in self.fisher.items()}
        )
        return state

    def load_state(
        self, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]
    ) -> None:
        """Restore what :meth:`state` returned."""
        super().load_state(arrays, meta)
        self.anchor = strip_prefix(arrays, "ewc/" + ANCHOR_PREFIX)
        self.fisher = strip_prefix(arrays, "ewc/" + FISHER_PREFIX)

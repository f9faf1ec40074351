"""Counting identity-token releases for the privacy ledger (pure Python).

A site is asked for its token once per stage, and again only when its reply was
unusable. Composing one event per release of every site would count each site's
releases for all sites; what is composed instead, per stage, is the release count
of the site asked most often in it (an upper bound for every site). This class
keeps those counts and says how many events a new release adds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class TokenReleases:
    """Token releases of the current stage, and the events composed for them.

    Attributes
    ----------
    stage : int
        The stage the counts are of (-1 before any release).
    counts : dict
        Site position -> tokens it released in ``stage``.
    composed : int
        Events composed for ``stage`` (the largest count).
    pending : int
        Events composed since the last recorded round.
    """

    stage: int = -1
    counts: dict[int, int] = field(default_factory=dict)
    composed: int = 0
    pending: int = 0

    def events(self, *, stage: int, positions: list[int]) -> int:
        """How much one more release of each of ``positions`` raises the top count."""
        same = stage == self.stage
        counts = self.counts if same else {}
        worst = max((counts.get(p, 0) + 1 for p in positions), default=0)
        return max(0, worst - (self.composed if same else 0))

    def add(self, *, stage: int, positions: list[int]) -> int:
        """Count a release of ``positions``; the events to compose for it."""
        events = self.events(stage=stage, positions=positions)
        if stage != self.stage:
            self.stage, self.counts, self.composed = stage, {}, 0
        for position in positions:
            self.counts[position] = self.counts.get(position, 0) + 1
        self.composed += events
        self.pending += events
        return events

    def take_pending(self) -> int:
        """The events since the last recorded round (and start counting anew)."""
        pending, self.pending = self.pending, 0
        return pending

    def state(self) -> dict[str, Any]:
        """JSON state for checkpoints."""
        return {
            "stage": self.stage,
            "counts": {str(p): c for p, c in self.counts.items()},
            "composed": self.composed,
            "round_events": self.pending,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> TokenReleases:
        """What :meth:`state` returned (empty: a checkpoint without token noise)."""
        return cls(
            stage=int(state.get("stage", -1)),
            counts={int(p): int(c) for p, c in state.get("counts", {}).items()},
            composed=int(state.get("composed", 0)),
            pending=int(state.get("round_events", 0)),
        )

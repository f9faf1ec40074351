"""Dynamic Knowledge Organization: identity-token slots and matching (pure numpy).

The server keeps one global identity token per subspace slot (at most E). At the first
round of a stage, the round's clients are greedily clustered: each client token, in
order, joins the most similar slot when cosine >= tau, otherwise opens a new slot
(Guo et al., "Federated Continual Instruction Tuning", ICCV 2025, Sec. 4.2). Clients
first seen later in the stage are matched the same way, one at a time.

Overflow (a new slot is needed but all E are taken): the client joins its most similar
slot whatever the similarity, and the event is reported, so knowledge of the new task
is merged into the closest old subspace rather than dropped.

Slot tokens are the sample-weighted mean of every client token assigned to them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from fcit_flower.similarity import cosine_matrix


@dataclass(frozen=True)
class MatchResult:
    """Where one client token went.

    Attributes
    ----------
    slot : int
        Slot (subspace) index.
    similarity : float
        Cosine with the slot token before the update (1.0 for a new slot).
    opened : bool
        Whether the client opened the slot.
    overflow : bool
        Whether the client was forced into its closest slot because all were taken.
    """

    slot: int
    similarity: float
    opened: bool
    overflow: bool


@dataclass
class TokenSlots:
    """The server's cache of global identity tokens.

    Parameters
    ----------
    capacity : int
        E, the number of subspaces.
    tau : float
        Cosine threshold for joining an existing slot.
    """

    capacity: int
    tau: float
    tokens: list[np.ndarray] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.tokens)

    def as_array(self) -> np.ndarray:
        """Slot tokens stacked, shape ``(len(self), dim)``."""
        return np.stack(self.tokens) if self.tokens else np.zeros((0, 0))

    def match(self, token: np.ndarray, num_examples: float) -> MatchResult:
        """Assign one client token to a slot and fold it into that slot's token."""
        if self.tokens:
            sims = cosine_matrix(token, self.as_array())[0]
            best = int(np.argmax(sims))
            best_sim = float(sims[best])
        else:
            best, best_sim = -1, -1.0
        if best >= 0 and best_sim >= self.tau:
            result = MatchResult(best, best_sim, opened=False, overflow=False)
        elif len(self.tokens) < self.capacity:
            self.tokens.append(np.zeros_like(token, dtype=np.float64))
            self.weights.append(0.0)
            result = MatchResult(len(self.tokens) - 1, 1.0, opened=True, overflow=False)
        else:
            result = MatchResult(best, best_sim, opened=False, overflow=True)
        slot = result.slot
        total = self.weights[slot] + num_examples
        self.tokens[slot] = (
            self.weights[slot] * self.tokens[slot] + num_examples * token
        ) / total
        self.weights[slot] = total
        return result

    def match_all(
        self, tokens: Sequence[np.ndarray], num_examples: Sequence[float]
    ) -> list[MatchResult]:
        """Greedy clustering of a round's clients, in the given order."""
        return [self.match(t, n) for t, n in zip(tokens, num_examples, strict=True)]

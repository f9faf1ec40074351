"""Cosine similarity of feature rows (pure numpy): DKO matching, SSA, token plots."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike


def cosine_matrix(a: ArrayLike, b: ArrayLike | None = None) -> np.ndarray:
    """Cosine similarity of each row of ``a`` with each row of ``b`` (or of ``a``).

    Norms are floored at 1e-12, so a zero row has similarity 0 with every row.
    """
    left = _unit_rows(a)
    right = left if b is None else _unit_rows(b)
    return left @ right.T


def _unit_rows(rows: ArrayLike) -> np.ndarray:
    array = np.atleast_2d(rows).astype(np.float64)
    return array / np.maximum(np.linalg.norm(array, axis=1, keepdims=True), 1e-12)

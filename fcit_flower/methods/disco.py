"""DISCO's inference side: Subspace Selective Activation weights (pure numpy).

For a test instruction with feature ``f`` and global identity tokens ``g_i`` of the
occupied subspaces, ``s_i = cos(f, g_i)`` and (Guo et al., ICCV 2025, Eq. 7)

- softmax (default): ``w = softmax(s / eps)``, eps = 0.05
- concat: ``w_i = 1`` for every occupied subspace (plain sum of subspaces)
- cosine: ``w_i = s_i`` (raw similarities as weights)
- argmax: one-hot on the most similar subspace

Unoccupied subspaces always get weight 0. Weights are normalised so that one fully
active subspace reproduces the scale it was trained at.
"""

from __future__ import annotations

import numpy as np

from fcit_flower.strategies.matching import cosine_matrix


def ssa_weights(
    features: np.ndarray,
    tokens: np.ndarray,
    *,
    capacity: int,
    mode: str = "softmax",
    eps: float = 0.05,
) -> np.ndarray:
    """Activation weights for each instruction feature.

    Parameters
    ----------
    features : ndarray, shape (n, d)
        Instruction features (same encoder as the identity tokens).
    tokens : ndarray, shape (k, d)
        Global identity tokens of the ``k`` occupied subspaces (slots ``0..k-1``).
    capacity : int
        E, total subspaces; columns ``k..E-1`` are zero.
    mode : {"softmax", "concat", "cosine", "argmax"}
        SSA variant (the paper's ablation).
    eps : float
        Softmax temperature.

    Returns
    -------
    ndarray, shape (n, capacity)
    """
    n, occupied = features.shape[0], tokens.shape[0]
    weights = np.zeros((n, capacity), dtype=np.float32)
    if occupied == 0:
        return weights
    sims = cosine_matrix(features, tokens)
    if mode == "softmax":
        logits = sims / eps
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        active = exp / exp.sum(axis=1, keepdims=True)
    elif mode == "concat":
        active = np.ones_like(sims)
    elif mode == "cosine":
        active = sims
    elif mode == "argmax":
        active = np.zeros_like(sims)
        active[np.arange(n), sims.argmax(axis=1)] = 1.0
    else:
        raise ValueError(f"unknown ssa-mode {mode!r}")
    weights[:, :occupied] = active
    return weights

"""Sample-weighted averaging and upload validation (pure numpy)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

Arrays = Mapping[str, np.ndarray]


def weighted_average(
    uploads: Iterable[Arrays], weights: Sequence[float]
) -> dict[str, np.ndarray]:
    """Key-wise average of ``uploads`` weighted by ``weights`` (FedAvg).

    ``uploads`` is consumed once, one upload at a time, into float64 accumulators:
    given a generator, memory stays at one upload plus the result whatever their
    number (``bench/bench_aggregation.py`` measures it).
    """
    total = float(sum(weights))
    if total <= 0:
        raise ValueError("weights must sum to a positive number")
    result: dict[str, np.ndarray] = {}
    dtypes: dict[str, np.dtype] = {}
    count = 0
    for upload, weight in zip(uploads, weights, strict=True):
        if not result:
            result = {k: np.zeros(v.shape, dtype=np.float64) for k, v in upload.items()}
            dtypes = {k: v.dtype for k, v in upload.items()}
        for key, value in upload.items():
            result[key] += (weight / total) * value
        count += 1
    if not count:
        raise ValueError("nothing to average")
    return {k: v.astype(dtypes[k]) for k, v in result.items()}


def upload_problem(
    upload: Arrays, reference: Arrays, *, max_norm_ratio: float = 0.0
) -> str | None:
    """Why ``upload`` may not be aggregated against ``reference``, or ``None``.

    Checks the key set, shapes, dtypes and finiteness; with ``max_norm_ratio > 0``
    also that ``||upload - reference|| <= max_norm_ratio * max(||reference||, 1)``.
    """
    if set(upload) != set(reference):
        missing = sorted(set(reference) - set(upload))[:3]
        extra = sorted(set(upload) - set(reference))[:3]
        return f"keys differ (missing {missing}, unexpected {extra})"
    for key, value in upload.items():
        expected = reference[key]
        if value.shape != expected.shape:
            return f"{key}: shape {value.shape} != {expected.shape}"
        if value.dtype != expected.dtype:
            return f"{key}: dtype {value.dtype} != {expected.dtype}"
        if not np.all(np.isfinite(value)):
            return f"{key}: non-finite values"
    if max_norm_ratio > 0:
        delta = np.sqrt(
            sum(float(np.sum((upload[k] - reference[k]) ** 2)) for k in upload)
        )
        scale = np.sqrt(sum(float(np.sum(v**2)) for v in reference.values()))
        if delta > max_norm_ratio * max(scale, 1.0):
            return f"update norm {delta:.3g} exceeds {max_norm_ratio} x {scale:.3g}"
    return None


def token_problem(
    token: np.ndarray, dimension: int, *, max_norm: float = 0.0
) -> str | None:
    """Why an identity token is unusable, or ``None``.

    With ``max_norm > 0`` a token longer than ``max_norm`` is refused too: slot tokens
    are sample-weighted means, so one huge token would drag a slot away from its task.
    """
    if token.ndim != 1 or token.shape[0] != dimension:
        return f"identity token shape {token.shape} != ({dimension},)"
    if not np.all(np.isfinite(token)):
        return "identity token has non-finite values"
    norm = float(np.linalg.norm(token))
    if norm < 1e-8:
        return "identity token has zero norm"
    if max_norm > 0 and norm > max_norm:
        return f"identity token norm {norm:.3g} exceeds {max_norm:g}"
    return None

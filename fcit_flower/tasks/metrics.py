"""Per-dataset scorers and the continual-learning summaries Last / Avg / BWT.

Pure Python and numpy: no torch.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Sequence

import numpy as np

_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation and articles, collapse spaces."""
    text = _PUNCT.sub(" ", text.lower())
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, answer: str) -> float:
    """1.0 when the normalised strings are equal."""
    return float(normalize_answer(prediction) == normalize_answer(answer))


def substring_match(prediction: str, answer: str) -> float:
    """1.0 when the normalised answer occurs in the normalised prediction.

    The reference scores DVQA and FigureQA this way.
    """
    target = normalize_answer(answer)
    return float(bool(target) and target in normalize_answer(prediction))


def _lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    previous = [0] * (len(b) + 1)
    for token in a:
        current = [0]
        for j, other in enumerate(b):
            current.append(
                previous[j] + 1 if token == other else max(previous[j + 1], current[j])
            )
        previous = current
    return previous[-1]


def rouge_l(prediction: str, answer: str, beta: float = 1.2) -> float:
    """ROUGE-L F-measure on lower-cased words (Lin, 2004; beta = 1.2 as in COCO)."""
    pred = prediction.lower().split()
    ref = answer.lower().split()
    if not pred or not ref:
        return 0.0
    lcs = _lcs_length(pred, ref)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(ref)
    return (1 + beta**2) * precision * recall / (recall + beta**2 * precision)


SCORERS: dict[str, Callable[[str, str], float]] = {
    "exact": exact_match,
    "substring": substring_match,
    "rouge-l": rouge_l,
}


def score(metric: str, predictions: Sequence[str], answers: Sequence[str]) -> float:
    """Mean score in percent of ``predictions`` against ``answers``."""
    if metric not in SCORERS:
        raise ValueError(f"unknown metric {metric!r}; allowed: {sorted(SCORERS)}")
    if len(predictions) != len(answers):
        raise ValueError("predictions and answers differ in length")
    if not answers:
        return 0.0
    scorer = SCORERS[metric]
    return 100.0 * float(
        np.mean([scorer(p, a) for p, a in zip(predictions, answers, strict=True)])
    )


def last_accuracy(matrix: np.ndarray) -> float:
    """Mean accuracy over all tasks after the final stage (the FCIT "Last")."""
    return float(np.mean(matrix[-1]))


def average_accuracy(matrix: np.ndarray, seen: Sequence[Sequence[int]]) -> float:
    """Mean over stages of the mean accuracy on the tasks seen so far ("Avg").

    Parameters
    ----------
    matrix : ndarray, shape (stages, tasks)
        ``matrix[i, j]``: accuracy on task ``j`` after stage ``i``.
    seen : sequence of sequences of int
        ``seen[i]``: the task columns learned up to and including stage ``i``.
    """
    return float(
        np.mean([np.mean(matrix[i, list(cols)]) for i, cols in enumerate(seen)])
    )


def backward_transfer(matrix: np.ndarray, learned_at: Sequence[int]) -> float:
    """BWT (Lopez-Paz & Ranzato, 2017): mean of ``a[T, j] - a[s_j, j]``.

    ``learned_at[j]`` is the stage at which task ``j`` was (last) learned; tasks
    learned at the final stage do not count. Negative values mean forgetting.
    """
    final = matrix.shape[0] - 1
    gaps = [
        matrix[final, j] - matrix[s, j] for j, s in enumerate(learned_at) if s < final
    ]
    return float(np.mean(gaps)) if gaps else 0.0


def summarize(
    matrix: np.ndarray, seen: Sequence[Sequence[int]], learned_at: Sequence[int]
) -> dict[str, float]:
    """``{"last", "avg", "bwt"}`` of an accuracy matrix."""
    return {
        "last": last_accuracy(matrix),
        "avg": average_accuracy(matrix, seen),
        "bwt": backward_transfer(matrix, learned_at),
    }

"""Per-dataset scorers and the continual-learning summaries Last / Avg / BWT.

Two readings of every score (pure Python and numpy, no torch):

- *normalized* (the accuracy matrix): case, punctuation, articles and whitespace
  ignored, numbers compared as numbers (``seven`` = ``7`` = ``7.0``), option letters
  parsed (``(B)``, ``B. red``, ``answer is B``);
- *strict* (the reference's scripts): the stripped strings compared without case
  (``pred.upper() == answer.upper()``), a DVQA/FigureQA answer contained in the
  prediction without case. Boxes and captions score the same in both.

Off-by-format answers (``seven`` for ``7``) are the gap between the two.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Sequence

import numpy as np

from fcit_flower.tasks import caption_metrics

_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")
_ARTICLES = re.compile(r"\b(a|an|the)\b")


_NUMBER_WORDS = {
    word: str(value)
    for value, word in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve "
        "thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty".split()
    )
}
_DECIMAL = re.compile(r"^-?\d+(?:\.\d+)?$")


def _number(word: str) -> str:
    """``seven`` -> ``7``, ``7.0`` / ``07`` -> ``7``; other words unchanged."""
    if word in _NUMBER_WORDS:
        return _NUMBER_WORDS[word]
    if _DECIMAL.match(word):
        value = float(word)
        return str(int(value)) if value.is_integer() else f"{value:g}"
    return word


def normalize_answer(text: str) -> str:
    """Lower-case, numbers as numbers, drop punctuation and articles."""
    words = [_number(w) for w in text.lower().split()]  # before "7.0" loses its dot
    text = _PUNCT.sub(" ", " ".join(words))
    return " ".join(_number(w) for w in _ARTICLES.sub(" ", text).split())


def strict_exact(prediction: str, answer: str) -> float:
    """The reference's exact match: stripped strings equal, case ignored."""
    return float(prediction.strip().upper() == answer.strip().upper())


def strict_substring(prediction: str, answer: str) -> float:
    """The answer inside the prediction, case ignored, nothing else normalised.

    (The reference's script tests the prediction inside the answer, so an empty
    prediction would count as right; the containment is taken the sound way round.)
    """
    target = answer.strip().upper()
    return float(bool(target) and target in prediction.strip().upper())


def exact_match(prediction: str, answer: str) -> float:
    """1.0 when the normalised strings are equal."""
    return float(normalize_answer(prediction) == normalize_answer(answer))


def substring_match(prediction: str, answer: str) -> float:
    """1.0 when the normalised answer occurs in the normalised prediction.

    The reference scores DVQA and FigureQA this way.
    """
    target = normalize_answer(answer)
    return float(bool(target) and target in normalize_answer(prediction))


def rouge_l(prediction: str, answer: str, beta: float = 1.2) -> float:
    """ROUGE-L F-measure on lower-cased words (Lin, 2004; beta = 1.2 as in COCO)."""
    return caption_metrics.rouge_l_tokens(
        prediction.lower().split(), answer.lower().split(), beta
    )


_NUMBER = r"-?\d+(?:\.\d+)?"
_BOX = re.compile(
    rf"\[\s*({_NUMBER})\s*,\s*({_NUMBER})\s*,\s*({_NUMBER})\s*,\s*({_NUMBER})\s*\]"
)
Box = tuple[float, float, float, float]


def parse_box(text: str) -> Box | None:
    """The first ``[x1, y1, x2, y2]`` in ``text`` (floats in 0-1 or pixel ints)."""
    found = _BOX.search(text)
    if found is None:
        return None
    x1, y1, x2, y2 = (float(v) for v in found.groups())
    return x1, y1, x2, y2


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two ``(x1, y1, x2, y2)`` boxes (0 if degenerate)."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(width, 0.0) * max(height, 0.0)
    area_a = max(a[2] - a[0], 0.0) * max(a[3] - a[1], 0.0)
    area_b = max(b[2] - b[0], 0.0) * max(b[3] - b[1], 0.0)
    union = area_a + area_b - inter
    return inter / union if union > 0 else 0.0


def _normalized(box: Box) -> bool:
    return all(0.0 <= v <= 1.0 for v in box)


def grounding_match(prediction: str, answer: str, threshold: float = 0.5) -> float:
    """1.0 when the predicted box overlaps the reference box with IoU > ``threshold``.

    Boxes are parsed from the text. A prediction in other units than the reference
    (0-1 floats against pixels) scores 0: the image size is not known here. A
    reference without a box (mini-FCIT's quadrant words) falls back to exact match.
    """
    reference = parse_box(answer)
    if reference is None:
        return exact_match(prediction, answer)
    predicted = parse_box(prediction)
    if predicted is None or _normalized(predicted) != _normalized(reference):
        return 0.0
    return float(box_iou(predicted, reference) > threshold)


_LETTER_ANSWER = re.compile(r"^\(?([A-Ha-h])\)?[.:]?$")
_LEADING_LETTER = re.compile(r"^\(?([A-H])(?:[).:]|\s|$)")
_ANSWER_IS = re.compile(r"answer is:?\s*\(?([A-Ha-h])\b")


def parse_choice(text: str) -> str | None:
    """The option letter a prediction gives, upper-case, or None.

    Accepts ``B``, ``(B)``, ``B.``, ``B) text``, ``B: text`` at the start, and
    ``... answer is B``; a lower-case letter only as the whole text.
    """
    stripped = text.strip()
    for pattern in (_LETTER_ANSWER, _LEADING_LETTER, _ANSWER_IS):
        found = pattern.search(stripped)
        if found:
            return found.group(1).upper()
    return None


def choice_match(prediction: str, answer: str) -> float:
    """Multiple choice: 1.0 when the option letters agree.

    Used where answers are option letters; a reference that is not a single letter
    falls back to exact match.
    """
    if not _LETTER_ANSWER.match(answer.strip()):
        return exact_match(prediction, answer)
    return float(parse_choice(prediction) == parse_choice(answer))


SCORERS: dict[str, Callable[[str, str], float]] = {
    "exact": exact_match,
    "substring": substring_match,
    "rouge-l": rouge_l,
    "iou": grounding_match,
    "choice": choice_match,
}

# Corpus-level captioning scores, in percent (CIDEr-D x 100).
CORPUS_SCORERS: dict[str, Callable[[Sequence[str], Sequence[str]], float]] = {
    "bleu-4": lambda p, a: 100.0 * caption_metrics.bleu4(p, a),
    "meteor": lambda p, a: 100.0 * caption_metrics.meteor(p, a),
    "cider": lambda p, a: 100.0 * caption_metrics.cider_d(p, a),
}

METRICS = (*SCORERS, *CORPUS_SCORERS)

# The strict reading where it differs from the normalized one.
STRICT_SCORERS: dict[str, Callable[[str, str], float]] = {
    "exact": strict_exact,
    "choice": strict_exact,
    "substring": strict_substring,
}


def score(
    metric: str,
    predictions: Sequence[str],
    answers: Sequence[str],
    *,
    strict: bool = False,
) -> float:
    """Mean score in percent of ``predictions`` against ``answers``.

    ``strict``: the reference's string comparison instead of the normalized one
    (module docstring); metrics without a strict reading score the same.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; allowed: {sorted(METRICS)}")
    if len(predictions) != len(answers):
        raise ValueError("predictions and answers differ in length")
    if not answers:
        return 0.0
    if metric in CORPUS_SCORERS:
        return CORPUS_SCORERS[metric](predictions, answers)
    scorer = STRICT_SCORERS.get(metric, SCORERS[metric]) if strict else SCORERS[metric]
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


def backward_transfer(matrix: np.ndarray, learned_at: Sequence[int]) -> float | None:
    """BWT (Lopez-Paz & Ranzato, 2017): mean of ``a[T, j] - a[s_j, j]``.

    ``learned_at[j]`` is the stage at which task ``j`` was (last) learned; tasks
    learned at the final stage do not count. Negative values mean forgetting.
    ``None`` when no task finished before the final stage (BWT is undefined then,
    e.g. Het-capability, where every position learns a task in the last stage).
    """
    final = matrix.shape[0] - 1
    gaps = [
        matrix[final, j] - matrix[s, j] for j, s in enumerate(learned_at) if s < final
    ]
    return float(np.mean(gaps)) if gaps else None


def summarize(
    matrix: np.ndarray, seen: Sequence[Sequence[int]], learned_at: Sequence[int]
) -> dict[str, float | None]:
    """``{"last", "avg", "bwt"}`` of an accuracy matrix (``bwt`` may be None)."""
    return {
        "last": last_accuracy(matrix),
        "avg": average_accuracy(matrix, seen),
        "bwt": backward_transfer(matrix, learned_at),
    }


def headroom_share(method: float, zero_shot: float, upper_bound: float) -> float | None:
    """``(method - zero-shot) / (upper bound - zero-shot)``.

    The share of the gap between the untrained base and the multi-task upper bound
    that a method closes (the paper's Finetune: (47.20 - 29.08) / (66.60 - 29.08)
    = 0.48). ``None`` when the upper bound does not exceed zero-shot.
    """
    gap = upper_bound - zero_shot
    return (method - zero_shot) / gap if gap > 0 else None


def mean_and_std(
    values: Sequence[float | None],
) -> tuple[float | None, float | None, int]:
    """Mean, sample standard deviation (n - 1) and count of the defined values.

    The std is ``None`` for fewer than two values; the mean is ``None`` for none.
    """
    defined = [float(v) for v in values if v is not None]
    if not defined:
        return None, None, 0
    std = float(np.std(defined, ddof=1)) if len(defined) > 1 else None
    return float(np.mean(defined)), std, len(defined)

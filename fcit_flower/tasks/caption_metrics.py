"""Captioning scores BLEU-4, METEOR, ROUGE-L and CIDEr-D in pure Python (no downloads).

The COCO caption toolkit (``pycocoevalcap``) needs Java for METEOR and its PTB
tokenizer, and NLTK's METEOR needs the WordNet corpus: neither works offline on a
bare machine, so the definitions are implemented here. Each takes one prediction
and one or more references per image, and returns a corpus score:

- **BLEU-4** (Papineni et al., 2002), corpus level as in the COCO toolkit: clipped
  n-gram counts (n = 1..4) summed over the corpus, uniform weights, brevity penalty
  ``exp(1 - r / c)`` when ``c < r`` with ``r`` the sum of the reference lengths
  closest to each prediction. No smoothing: a corpus without any matching 4-gram
  scores 0.
- **METEOR**, simplified (Banerjee & Lavie, 2005): exact unigram matches only (no
  stemming, no synonyms: WordNet is not available), each prediction word aligned to
  the first unused equal reference word; ``Fmean = 10 P R / (R + 9 P)``, fragmentation
  penalty ``0.5 (chunks / matches) ** 3``; the best reference counts; corpus score =
  mean over images. Values are lower than the official METEOR's.
- **ROUGE-L** (Lin, 2004), F-measure with beta = 1.2, best reference, mean over images.
- **CIDEr-D** (Vedantam et al., 2015, as in the COCO toolkit): n-gram (1..4) term
  frequency x ``log(N / max(1, df))`` with ``N`` the number of images and ``df`` the
  number of images whose references contain the n-gram (the tf-idf is over the test
  references); per n the clipped cosine ``sum min(h, r) r / (|h| |r|)``, times the
  length penalty ``exp(-(len_h - len_r)^2 / (2 * 6^2))`` (lengths in words), averaged
  over references and over n, times 10. A corpus of one image scores 0 (every idf is 0).

Tokenisation: lower-case, punctuation removed, split on white space.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Callable, Sequence

_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")
MAX_N = 4
CIDER_SIGMA = 6.0


def tokenize(text: str) -> list[str]:
    """Lower-cased words without punctuation."""
    return _PUNCT.sub(" ", text.lower()).split()


def _ngrams(tokens: Sequence[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def _as_refs(references: Sequence[str | Sequence[str]]) -> list[list[list[str]]]:
    out = []
    for refs in references:
        group = [refs] if isinstance(refs, str) else list(refs)
        if not group:
            raise ValueError("every prediction needs at least one reference")
        out.append([tokenize(r) for r in group])
    return out


def _check(predictions: Sequence[str], references: Sequence[object]) -> None:
    if len(predictions) != len(references):
        raise ValueError("predictions and references differ in length")


def bleu4(
    predictions: Sequence[str], references: Sequence[str | Sequence[str]]
) -> float:
    """Corpus BLEU-4 in [0, 1] (see the module docstring)."""
    _check(predictions, references)
    refs = _as_refs(references)
    matched = [0] * MAX_N
    total = [0] * MAX_N
    hyp_len = ref_len = 0
    for prediction, group in zip(predictions, refs, strict=True):
        hyp = tokenize(prediction)
        hyp_len += len(hyp)
        ref_len += min((abs(len(r) - len(hyp)), len(r)) for r in group)[1]
        for n in range(1, MAX_N + 1):
            counts = _ngrams(hyp, n)
            best: Counter[tuple[str, ...]] = Counter()
            for r in group:
                best |= _ngrams(r, n)
            matched[n - 1] += sum(min(c, best[g]) for g, c in counts.items())
            total[n - 1] += max(len(hyp) - n + 1, 0)
    if hyp_len == 0 or min(matched) == 0:
        return 0.0
    log_precision = sum(math.log(m / t) for m, t in zip(matched, total, strict=True))
    penalty = 1.0 if hyp_len >= ref_len else math.exp(1.0 - ref_len / hyp_len)
    return penalty * math.exp(log_precision / MAX_N)


def _meteor_one(hyp: Sequence[str], ref: Sequence[str]) -> float:
    used = [False] * len(ref)
    alignment: list[int] = []  # reference index of each matched hypothesis word
    for word in hyp:
        for j, other in enumerate(ref):
            if not used[j] and other == word:
                used[j] = True
                alignment.append(j)
                break
        else:
            alignment.append(-1)
    pairs = [(i, j) for i, j in enumerate(alignment) if j >= 0]
    matches = len(pairs)
    if matches == 0:
        return 0.0
    chunks = 1 + sum(
        1
        for (i0, j0), (i1, j1) in zip(pairs, pairs[1:], strict=False)
        if not (i1 == i0 + 1 and j1 == j0 + 1)
    )
    precision, recall = matches / len(hyp), matches / len(ref)
    fmean = 10 * precision * recall / (recall + 9 * precision)
    return fmean * (1.0 - 0.5 * (chunks / matches) ** 3)


def meteor(
    predictions: Sequence[str], references: Sequence[str | Sequence[str]]
) -> float:
    """Simplified METEOR in [0, 1], mean over images (see the module docstring)."""
    return _best_reference_mean(predictions, references, _meteor_one)


def _best_reference_mean(
    predictions: Sequence[str],
    references: Sequence[str | Sequence[str]],
    score: Callable[[Sequence[str], Sequence[str]], float],
) -> float:
    """Mean over images of the best ``score(prediction, reference)`` (tokens)."""
    _check(predictions, references)
    refs = _as_refs(references)
    if not refs:
        return 0.0
    return sum(
        max(score(tokenize(p), r) for r in group)
        for p, group in zip(predictions, refs, strict=True)
    ) / len(refs)


def _lcs(a: Sequence[str], b: Sequence[str]) -> int:
    previous = [0] * (len(b) + 1)
    for token in a:
        current = [0]
        for j, other in enumerate(b):
            current.append(
                previous[j] + 1 if token == other else max(previous[j + 1], current[j])
            )
        previous = current
    return previous[-1]


def rouge_l_tokens(hyp: Sequence[str], ref: Sequence[str], beta: float = 1.2) -> float:
    """ROUGE-L F-measure of two token lists (Lin, 2004; beta = 1.2 as in COCO)."""
    if not hyp or not ref:
        return 0.0
    lcs = _lcs(hyp, ref)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(hyp), lcs / len(ref)
    return (1 + beta**2) * precision * recall / (recall + beta**2 * precision)


def rouge_l_corpus(
    predictions: Sequence[str], references: Sequence[str | Sequence[str]]
) -> float:
    """ROUGE-L F (beta 1.2) in [0, 1], best reference, mean over images."""
    return _best_reference_mean(predictions, references, rouge_l_tokens)


def _tfidf(
    tokens: Sequence[str], df: Counter[tuple[str, ...]], log_n: float
) -> list[dict[tuple[str, ...], float]]:
    vectors = []
    for n in range(1, MAX_N + 1):
        vectors.append(
            {
                gram: count * (log_n - math.log(max(1.0, df[gram])))
                for gram, count in _ngrams(tokens, n).items()
            }
        )
    return vectors


def _norm(vector: dict[tuple[str, ...], float]) -> float:
    return math.sqrt(sum(v * v for v in vector.values()))


def cider_d(
    predictions: Sequence[str], references: Sequence[str | Sequence[str]]
) -> float:
    """Corpus CIDEr-D (0 to 10; see the module docstring)."""
    _check(predictions, references)
    refs = _as_refs(references)
    if not refs:
        return 0.0
    df: Counter[tuple[str, ...]] = Counter()
    for group in refs:
        df.update(
            {g for r in group for n in range(1, MAX_N + 1) for g in _ngrams(r, n)}
        )
    log_n = math.log(float(len(refs)))
    total = 0.0
    for prediction, group in zip(predictions, refs, strict=True):
        hyp = tokenize(prediction)
        hyp_vec = _tfidf(hyp, df, log_n)
        image_score = 0.0
        for ref in group:
            ref_vec = _tfidf(ref, df, log_n)
            delta = len(hyp) - len(ref)
            penalty = math.exp(-(delta**2) / (2 * CIDER_SIGMA**2))
            per_n = 0.0
            for h, r in zip(hyp_vec, ref_vec, strict=True):
                norms = _norm(h) * _norm(r)
                if norms > 0:
                    dot = sum(min(v, r[g]) * r[g] for g, v in h.items() if g in r)
                    per_n += penalty * dot / norms
            image_score += per_n / MAX_N
        total += 10.0 * image_score / len(group)
    return total / len(refs)


def caption_scores(
    predictions: Sequence[str], references: Sequence[str | Sequence[str]]
) -> dict[str, float]:
    """All four scores, in percent (CIDEr-D x 100 as in papers' tables)."""
    return {
        "bleu-4": 100.0 * bleu4(predictions, references),
        "meteor": 100.0 * meteor(predictions, references),
        "rouge-l": 100.0 * rouge_l_corpus(predictions, references),
        "cider": 100.0 * cider_d(predictions, references),
    }

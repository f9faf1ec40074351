"""Evaluation of a global state on every task's test set (server side).

A method turns the global arrays into an :class:`EvaluationModel` (its inference
model, and optionally a hook called before each test batch: DISCO's Subspace
Selective Activation sets the per-example subspace weights there and returns them);
:func:`evaluate_state` decodes every test set with it and scores the answers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from fcit_flower.config import RunConfig
from fcit_flower.runtime import Runtime
from fcit_flower.tasks.catalog import get_task
from fcit_flower.tasks.fcit_data import Sample
from fcit_flower.tasks.metrics import score
from fcit_flower.training import generate_answers

# Called with each test batch before decoding it; may return per-example adapter
# weights (shape (batch, E)), whose mean per task is reported.
BatchHook = Callable[[Sequence[Sample]], np.ndarray | None]


@dataclass(frozen=True)
class EvaluationModel:
    """What a method evaluates: its inference model and an optional batch hook.

    Attributes
    ----------
    model : torch.nn.Module
        The base with the method's adapter loaded from the global arrays.
    before_batch : BatchHook, optional
        Called before each test batch is decoded.
    """

    model: torch.nn.Module
    before_batch: BatchHook | None = None


@dataclass
class StageEvaluation:
    """Scores of one evaluation (one row of the accuracy matrix).

    Attributes
    ----------
    scores : dict
        Task -> score in percent (the normalized reading; the accuracy matrix).
    strict_scores : dict
        Task -> the reference's strict reading (:mod:`fcit_flower.tasks.metrics`).
    phrasing_scores : dict
        Task -> {``train``/``heldout``: score} over the test items whose data
        marks their phrasing (mini-FCIT does): instructions phrased as in training
        vs held-out phrasings.
    top_adapters : dict
        Task -> {phrasing or ``all``: per-example index of the largest batch-hook
        weight} (DISCO: the subspace SSA activates most; test-time routing).
    mean_activation : dict
        Task -> mean per-example adapter weights the batch hook returned (DISCO:
        the SSA weight of each subspace).
    examples : dict
        Task -> a few (question, prediction, answer) triples for inspection.
    details : dict
        Task -> further scores of tasks with ``extra_metrics`` (captioning).
    predictions : dict
        Task -> every decoded answer, in test-set order.
    """

    scores: dict[str, float] = field(default_factory=dict)
    strict_scores: dict[str, float] = field(default_factory=dict)
    phrasing_scores: dict[str, dict[str, float]] = field(default_factory=dict)
    top_adapters: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    mean_activation: dict[str, list[float]] = field(default_factory=dict)
    examples: dict[str, list[tuple[str, str, str]]] = field(default_factory=dict)
    details: dict[str, dict[str, float]] = field(default_factory=dict)
    predictions: dict[str, list[str]] = field(default_factory=dict)


def evaluate_state(
    config: RunConfig,
    runtime: Runtime,
    evaluated: EvaluationModel,
    test_sets: Mapping[str, Sequence[Sample]],
) -> StageEvaluation:
    """Score ``evaluated`` on every test set."""
    bundle = runtime.bundle
    result = StageEvaluation()
    collected: list[np.ndarray] = []  # batch-hook weights of the current task
    hook = evaluated.before_batch

    def before_batch(batch: Sequence[Sample]) -> None:
        assert hook is not None  # only passed on when there is one
        weights = hook(batch)
        if weights is not None:
            collected.append(weights)

    for task, samples in test_sets.items():
        collected.clear()
        predictions = generate_answers(
            evaluated.model,
            bundle.tokenizer,
            samples,
            image_size=bundle.image_size,
            num_image_tokens=bundle.num_image_tokens,
            max_new_tokens=config.max_new_tokens,
            before_batch=before_batch if hook is not None else None,
            image_mean=bundle.image_mean,
            image_std=bundle.image_std,
        )
        answers = [s.answer for s in samples]
        result.predictions[task] = predictions
        info = get_task(task, runtime.root)
        result.scores[task] = score(info.metric, predictions, answers)
        result.strict_scores[task] = score(
            info.metric, predictions, answers, strict=True
        )
        by_phrasing = _by_phrasing(samples)
        if by_phrasing:
            result.phrasing_scores[task] = {
                kind: round(
                    score(
                        info.metric,
                        [predictions[i] for i in rows],
                        [answers[i] for i in rows],
                    ),
                    2,
                )
                for kind, rows in by_phrasing.items()
            }
        if info.extra_metrics:
            result.details[task] = {
                m: round(score(m, predictions, answers), 2) for m in info.extra_metrics
            }
        result.examples[task] = [
            (s.question, p, s.answer)
            for s, p in list(zip(samples, predictions, strict=True))[:3]
        ]
        if collected:
            weights = np.concatenate(collected)
            result.mean_activation[task] = weights.mean(0).round(4).tolist()
            top = weights.argmax(axis=1).tolist()
            result.top_adapters[task] = {
                "all": top,
                **{k: [top[i] for i in rows] for k, rows in by_phrasing.items()},
            }
    return result


def _by_phrasing(samples: Sequence[Sample]) -> dict[str, list[int]]:
    """Indices of the items per marked phrasing (empty when none is marked)."""
    groups: dict[str, list[int]] = {}
    for index, sample in enumerate(samples):
        if sample.phrasing:
            groups.setdefault(sample.phrasing, []).append(index)
    return groups

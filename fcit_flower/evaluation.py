"""Evaluation of a global state on every task's test set (server side).

Finetune and zero-shot evaluate a PEFT model with the global LoRA; DISCO evaluates the
base with a multi-subspace LoRA whose weights come from Subspace Selective Activation
per test example.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from fcit_flower.config import RunConfig
from fcit_flower.methods.baselines import WRAPPED_METHODS, wrapped_eval_model
from fcit_flower.methods.disco import ssa_weights
from fcit_flower.models.adapters import (
    LORA_TARGETS,
    adapted_model,
    load_base,
    load_lora_state,
    load_projector_state,
    projector_state,
    split_projector,
)
from fcit_flower.models.subspace_lora import (
    inject_subspace_lora,
    set_activation,
    subspace_layers,
)
from fcit_flower.runtime import Runtime, sample_features
from fcit_flower.strategies.disco import (
    projector_arrays,
    slots_from_arrays,
    subspace_arrays,
)
from fcit_flower.tasks.catalog import get_task
from fcit_flower.tasks.fcit_data import Sample
from fcit_flower.tasks.metrics import score
from fcit_flower.training import generate_answers


@dataclass
class StageEvaluation:
    """Scores of one evaluation (one row of the accuracy matrix).

    Attributes
    ----------
    scores : dict
        Task -> score in percent.
    mean_activation : dict
        DISCO only: task -> mean SSA weight per subspace.
    examples : dict
        Task -> a few (question, prediction, answer) triples for inspection.
    details : dict
        Task -> further scores of tasks with ``extra_metrics`` (captioning).
    """

    scores: dict[str, float] = field(default_factory=dict)
    mean_activation: dict[str, list[float]] = field(default_factory=dict)
    examples: dict[str, list[tuple[str, str, str]]] = field(default_factory=dict)
    details: dict[str, dict[str, float]] = field(default_factory=dict)


@lru_cache(maxsize=2)
def _subspace_model(
    path: str, capacity: int, rank: int, scaling: float
) -> torch.nn.Module:
    model = copy.deepcopy(load_base(path).model)
    inject_subspace_lora(
        model, LORA_TARGETS, num_subspaces=capacity, rank=rank, scaling=scaling
    )
    model.eval()
    return model


def evaluate_state(
    config: RunConfig,
    runtime: Runtime,
    arrays: dict[str, np.ndarray],
    test_sets: Mapping[str, Sequence[Sample]],
) -> StageEvaluation:
    """Score the global ``arrays`` of ``config.method`` on every test set."""
    base_path, bundle = runtime.base_path, runtime.bundle
    result = StageEvaluation()
    before_batch = None
    collected: list[np.ndarray] = []  # SSA weights of the current task's batches
    if config.method == "disco":
        model = _subspace_model(
            base_path, config.num_subspaces, config.subspace_rank, config.lora_scaling
        )
        _load_subspaces(model, arrays, config.num_subspaces)
        load_projector_state(
            model, projector_arrays(arrays) or projector_state(bundle.model)
        )
        slots = slots_from_arrays(arrays, config.num_subspaces, config.tau)
        tokens = slots.as_array() if len(slots) else np.zeros((0, 1))

        def before_batch(batch: Sequence[Sample]) -> None:
            features = sample_features(config, runtime, batch)
            weights = ssa_weights(
                features,
                tokens,
                capacity=config.num_subspaces,
                mode=config.ssa_mode,
                eps=config.ssa_eps,
            )
            collected.append(weights)
            set_activation(model, torch.from_numpy(weights))
    elif config.method in WRAPPED_METHODS:  # issue 6: summed blocks, MoE-LoRA
        model = wrapped_eval_model(config, runtime, arrays)
    else:
        model = adapted_model(
            base_path, config.lora_rank, config.lora_scaling, config.lora_dropout
        )
        adapter, projector = split_projector(arrays)
        load_lora_state(model, adapter)
        load_projector_state(model, projector or projector_state(bundle.model))
    for task, samples in test_sets.items():
        collected.clear()
        predictions = generate_answers(
            model,
            bundle.tokenizer,
            samples,
            image_size=bundle.image_size,
            num_image_tokens=bundle.num_image_tokens,
            max_new_tokens=config.max_new_tokens,
            before_batch=before_batch,
            image_mean=bundle.image_mean,  # issue 7: CLIP pixel statistics
            image_std=bundle.image_std,
        )
        answers = [s.answer for s in samples]
        info = get_task(task, runtime.root)
        result.scores[task] = score(info.metric, predictions, answers)
        if info.extra_metrics:
            result.details[task] = {
                m: round(score(m, predictions, answers), 2) for m in info.extra_metrics
            }
        result.examples[task] = [
            (s.question, p, s.answer)
            for s, p in list(zip(samples, predictions, strict=True))[:3]
        ]
        if collected:
            result.mean_activation[task] = (
                np.concatenate(collected).mean(0).round(4).tolist()
            )
    return result


def get_task_metric(task: str, root: Path | None = None) -> str:
    """Metric name of a task from the catalog (or its ``task.json`` under ``root``)."""
    return get_task(task, root).metric


def _load_subspaces(
    model: torch.nn.Module, arrays: dict[str, np.ndarray], capacity: int
) -> None:
    layers = dict(subspace_layers(model))
    with torch.no_grad():
        for _, layer in layers.items():
            layer.lora_A.zero_()
            layer.lora_B.zero_()
        for slot in range(capacity):
            factors = subspace_arrays(arrays, slot)
            for key, value in factors.items():
                module, factor = _split_lora_key(key)
                target = getattr(layers[module], factor)
                target[slot].copy_(torch.from_numpy(np.asarray(value)))


def _split_lora_key(key: str) -> tuple[str, str]:
    """``m.lora_A.weight`` -> (``m``, ``lora_A``)."""
    module, factor, _ = key.rsplit(".", 2)
    return module, factor

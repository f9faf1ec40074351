"""Use an exported model: load it, answer questions, score it on FCIT data.

The export is read back into the global arrays the run held, and the method's own
inference model is built from them (:meth:`~fcit_flower.methods.base.Method.
evaluation_model`): ``predict`` and ``evaluate`` decode exactly as the run's
evaluation did, DISCO's Subspace Selective Activation included.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fcit_flower.config import RunConfig
from fcit_flower.evaluation import EvaluationModel, evaluate_state
from fcit_flower.export.layout import (
    BASE_DIR,
    EXPORT_JSON,
    RUN_CONFIG_JSON,
    ExportError,
    find_export,
    read_json,
)
from fcit_flower.methods.registry import get_method
from fcit_flower.models.adapters import load_base, register_base
from fcit_flower.models.llava import LoadOptions
from fcit_flower.results import atomic_write_text, write_results
from fcit_flower.runtime import Runtime, base_model_path
from fcit_flower.tasks.data import test_samples
from fcit_flower.tasks.fcit_data import Sample
from fcit_flower.tasks.record_checks import image_problem
from fcit_flower.tasks.schedule import Schedule, make_schedule
from fcit_flower.training import generate_answers


@dataclass(frozen=True)
class LoadedExport:
    """An export loaded for inference.

    Attributes
    ----------
    folder : Path
        The export folder (``adapters/stage-<k>``).
    info : dict
        Its ``export.json``.
    config : RunConfig
        The run's config (``data-root`` replaced when evaluating other data).
    runtime : Runtime
        Base model, schedule and data root.
    evaluated : EvaluationModel
        The method's inference model (and DISCO's SSA hook).
    """

    folder: Path
    info: dict[str, Any]
    config: RunConfig
    runtime: Runtime
    evaluated: EvaluationModel


@dataclass(frozen=True)
class Prediction:
    """One answer, with DISCO's subspace weights (empty for other methods)."""

    answer: str
    weights: list[float]


def load_export(
    run_dir: Path, stage: int | None = None, *, data_root: Path | None = None
) -> LoadedExport:
    """Load the export of ``stage`` (default: the last one) of ``run_dir``.

    Raises
    ------
    ExportError
        When the run, the stage or a file of the export is missing.
    ConfigError
        When the stored config (or ``data_root``) is not usable here.
    """
    folder = find_export(run_dir.expanduser(), stage)
    info = read_json(folder / EXPORT_JSON)
    values = read_json(folder / RUN_CONFIG_JSON)
    if data_root is not None:
        values["data-root"] = str(data_root.expanduser().resolve())
    config = RunConfig.from_mapping(values)
    tiny = config.model == "tiny"
    base_path = str(folder / BASE_DIR) if tiny else base_model_path(config)
    if tiny and not (folder / BASE_DIR / "tokenizer.json").is_file():
        raise ExportError(f"{folder}: the tiny base ({BASE_DIR}/) is missing")
    register_base(base_path, LoadOptions.from_config(config))
    root = Path(config.data_root) if config.data_root else folder
    runtime = Runtime(root, make_schedule(config), base_path, load_base(base_path))
    method = get_method(config.method)
    arrays = method.import_arrays(config, folder)
    evaluated = method.evaluation_model(config, runtime, arrays)
    return LoadedExport(folder, info, config, runtime, evaluated)


def check_image(path: Path, name: str) -> Path:
    """``path`` resolved, or :class:`ExportError` naming ``name`` and the reason."""
    problem = image_problem(path)
    if problem is not None:
        raise ExportError(f"{name} {str(path)!r}: {problem}")
    return path.resolve()


def predict(
    loaded: LoadedExport, questions: Sequence[tuple[Path, str]]
) -> list[Prediction]:
    """Greedy answers to ``(image, question)`` pairs, batched as the evaluation is."""
    samples = [
        Sample(str(i), image, question.replace("<image>", "").strip(), "")
        for i, (image, question) in enumerate(questions)
    ]
    weights: list[np.ndarray] = []
    hook = loaded.evaluated.before_batch

    def before_batch(batch: Sequence[Sample]) -> None:
        assert hook is not None  # only passed on when there is one
        found = hook(batch)
        if found is not None:
            weights.append(found)

    bundle = loaded.runtime.bundle
    answers = generate_answers(
        loaded.evaluated.model,
        bundle.tokenizer,
        samples,
        image_size=bundle.image_size,
        num_image_tokens=bundle.num_image_tokens,
        max_new_tokens=loaded.config.max_new_tokens,
        before_batch=before_batch if hook is not None else None,
        image_mean=bundle.image_mean,
        image_std=bundle.image_std,
    )
    rows = np.concatenate(weights).tolist() if weights else [[] for _ in answers]
    occupied = loaded.info["format"].get("occupied_slots")
    return [
        Prediction(answer, [round(w, 4) for w in row[:occupied]])
        for answer, row in zip(answers, rows, strict=True)
    ]


def evaluate(
    loaded: LoadedExport, out_dir: Path, tasks: Sequence[str] = ()
) -> dict[str, Any]:
    """Score the export on ``tasks`` (default: the run's) of its data root.

    Writes ``metrics.json`` and ``accuracy_matrix.csv`` (one row) as a run does,
    and ``predictions.jsonl`` (every answer) into ``out_dir``.

    Returns
    -------
    dict
        The metrics payload.
    """
    config, runtime = loaded.config, loaded.runtime
    names = tuple(tasks) or runtime.schedule.tasks
    test_sets = {t: test_samples(runtime.root, t, config) for t in names}
    evaluation = evaluate_state(config, runtime, loaded.evaluated, test_sets)
    schedule = Schedule(assignments=((names,),), tasks=names)
    metrics = write_results(
        out_dir,
        config=config.to_mapping(),
        schedule=schedule,
        rows=[[round(evaluation.scores[t], 2) for t in names]],
        strict_rows=[[round(evaluation.strict_scores[t], 2) for t in names]],
        extra={
            "method": config.method,
            "export": str(loaded.folder),
            "stage": loaded.info["stage"],
            "data_root": str(runtime.root),
            "examples": evaluation.examples,
            "detail_scores": evaluation.details,
            "phrasing_scores": [evaluation.phrasing_scores],
            "mean_activation": evaluation.mean_activation,
        },
    )
    lines = [
        json.dumps(
            {"task": t, "question_id": s.id, "prediction": p, "answer": s.answer}
        )
        for t in names
        for s, p in zip(test_sets[t], evaluation.predictions[t], strict=True)
    ]
    atomic_write_text(out_dir / "predictions.jsonl", "\n".join(lines) + "\n")
    return metrics

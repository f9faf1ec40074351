"""mini-FCIT v2: the embedded benchmark, written in the FCIT data format.

``build_mini_fcit(root)`` writes 12 tasks (:mod:`fcit_flower.tasks.catalog`,
generators and phrasings in :mod:`fcit_flower.tasks.mini_fcit.tasks`) in the simple
FCIT layout: ``<root>/<task>/train.json`` (LLaVA conversations), ``val.json`` and
``test.json`` (``question_id, image, text, answer`` plus ``phrasing``: ``train`` or
``heldout``), PNG images under ``<root>/images/``, paths relative to ``<root>``, and
``stats.json`` (per task: chance, majority answer and its score, answer counts).

Val and test items of a task with a uniform answer space are balanced over it
(:attr:`TaskSpec.answers`). Clean splits: every image is compared by decoded
pixels (:func:`pixel_hash`) with every image drawn before it, test first, then
val, then train, and with the tiny base's whole pre-training corpus; a duplicate is
redrawn. Test sets therefore do not change with ``train_size``. Deterministic in
``seed``; built once (a ``.complete`` marker holds the parameters) under a file lock.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import tempfile
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fcit_flower.filemode import follow_umask
from fcit_flower.tasks.catalog import TASKS
from fcit_flower.tasks.metrics import score
from fcit_flower.tasks.mini_fcit.pixels import pixel_hash
from fcit_flower.tasks.mini_fcit.pretrain import (
    CORPUS_SEED,
    CORPUS_VERSION,
    base_corpus,
)
from fcit_flower.tasks.mini_fcit.tasks import TASK_SPECS, instruction

log = logging.getLogger(__name__)

VERSION = "v2.4"
SPLITS = ("test", "val", "train")  # build order: earlier splits keep their images
SPLIT_SEED = {"train": 0, "test": 1, "val": 2}
HELDOUT_SHARE = 0.5  # of val and test items phrased with held-out templates
MAX_REDRAWS = 1000


def _rng(seed: int, task: str, split: str) -> np.random.Generator:
    return np.random.default_rng([seed, SPLIT_SEED[split], *task.encode()])


@lru_cache(maxsize=4)
def pretraining_hashes(seed: int, size: int) -> frozenset[str]:
    """Pixel hashes of every image of the base's pre-training (both stages)."""
    alignment, instructions = base_corpus(seed=seed, size=size)
    return frozenset(pixel_hash(p) for p, _, _ in [*alignment, *instructions])


def _draw_split(
    task: str, split: str, count: int, seed: int, size: int, seen: set[str]
) -> tuple[list[dict[str, Any]], list[np.ndarray], int]:
    """``count`` records of one split with images unseen so far; redraws counted."""
    spec = TASK_SPECS[task]
    rng = _rng(seed, task, split)
    records: list[dict[str, Any]] = []
    images: list[np.ndarray] = []
    redraws = skipped = 0
    # Val and test are balanced over a uniform answer space: no answer more than
    # its share, so 50 items do not hand the majority class a sampling accident.
    balanced = split != "train" and bool(spec.answers)
    share, extra = divmod(count, len(spec.answers)) if balanced else (count, 0)
    drawn: Counter[str] = Counter()
    while len(records) < count:
        pixels, kind, fields, answer = spec.generate(rng, size, split)
        # ``share`` items per answer, one more for the first ``extra`` to get there
        full = drawn[answer] >= share and (
            drawn[answer] > share or sum(n > share for n in drawn.values()) >= extra
        )
        if balanced and full:
            skipped += 1
            if skipped > MAX_REDRAWS * max(1, count):
                raise RuntimeError(f"mini-FCIT {task}/{split}: answers not balanced")
            continue
        digest = pixel_hash(pixels)
        if digest in seen:
            redraws += 1
            if redraws > MAX_REDRAWS * max(1, count):
                raise RuntimeError(
                    f"mini-FCIT {task}/{split}: too many duplicate images"
                )
            continue
        seen.add(digest)
        drawn[answer] += 1
        phrasings = spec.phrasings[kind]
        heldout = split != "train" and rng.random() < HELDOUT_SHARE
        options = phrasings.heldout if heldout else phrasings.train
        template = options[int(rng.integers(0, len(options)))]
        records.append(
            {
                "question": instruction(spec, kind, fields, template),
                "answer": answer,
                "phrasing": "heldout" if heldout else "train",
            }
        )
        images.append(pixels)
    return records, images, redraws


def _write_split(
    root: Path,
    task: str,
    split: str,
    records: list[dict[str, Any]],
    images: list[np.ndarray],
) -> None:
    folder = root / "images" / task
    folder.mkdir(parents=True, exist_ok=True)
    payload = []
    for index, (record, pixels) in enumerate(zip(records, images, strict=True)):
        relative = f"images/{task}/{split}-{index}.png"
        Image.fromarray(pixels).save(root / relative, format="PNG", compress_level=6)
        key = f"{task}-{split}-{index}"
        if split == "train":
            payload.append(
                {
                    "id": key,
                    "image": relative,
                    "conversations": [
                        {"from": "human", "value": f"<image>\n{record['question']}"},
                        {"from": "gpt", "value": record["answer"]},
                    ],
                }
            )
        else:
            payload.append(
                {
                    "question_id": key,
                    "image": relative,
                    "text": record["question"],
                    "answer": record["answer"],
                    "phrasing": record["phrasing"],
                }
            )
    (root / task).mkdir(parents=True, exist_ok=True)
    (root / task / f"{split}.json").write_text(json.dumps(payload, indent=0))


def task_statistics(
    task: str, train: list[dict[str, Any]], test: list[dict[str, Any]]
) -> dict[str, Any]:
    """Chance and majority-class rates of a task (in percent, the task's metric).

    The majority baseline always answers the most frequent *training* answer.
    """
    metric = TASKS[task].metric
    counts = Counter(r["answer"] for r in train)
    majority = counts.most_common(1)[0][0]
    answers = [r["answer"] for r in test]
    return {
        "metric": metric,
        "chance": round(TASK_SPECS[task].chance, 2),
        "majority_answer": majority,
        "majority": round(score(metric, [majority] * len(answers), answers), 2),
        "distinct_answers": len(counts),
        "heldout_share": round(
            float(np.mean([r["phrasing"] == "heldout" for r in test])), 3
        ),
    }


def build_mini_fcit(
    root: Path,
    *,
    seed: int = 0,
    train_size: int = 400,
    val_size: int = 50,
    test_size: int = 50,
    image_size: int = 32,
    exclude_pretraining: bool = True,
) -> Path:
    """Write (once) the 12 mini-FCIT tasks under ``root`` and return ``root``.

    Parameters
    ----------
    root : Path
        Output directory (created atomically: built aside, then renamed).
    seed : int
        Data seed; the same seed gives byte-identical files.
    train_size, val_size, test_size : int
        Samples per task and split.
    image_size : int
        Side of the square RGB images.
    exclude_pretraining : bool
        Redraw any image that the default base saw in pre-training (both
        stages); off only to build faster in tests that do not need it.
    """
    params = {
        "version": VERSION,
        "seed": seed,
        "train_size": train_size,
        "val_size": val_size,
        "test_size": test_size,
        "image_size": image_size,
        "pretraining": [CORPUS_SEED, CORPUS_VERSION] if exclude_pretraining else None,
    }
    marker = root / ".complete"
    if marker.exists() and json.loads(marker.read_text()) == params:
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists() and json.loads(marker.read_text()) == params:
            return root
        log.info("building mini-FCIT (once, cached in %s)", root)
        staging = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}-"))
        follow_umask(staging)  # mkdtemp makes it 0700; the cache is shared
        try:
            _build(staging, params, exclude_pretraining)
            if root.exists():
                shutil.rmtree(root)
            os.replace(staging, root)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return root


def _build(staging: Path, params: dict[str, Any], exclude_pretraining: bool) -> None:
    size, seed = params["image_size"], params["seed"]
    sizes = {s: params[f"{s}_size"] for s in SPLITS}
    seen: set[str] = set()
    if exclude_pretraining:
        seen |= pretraining_hashes(CORPUS_SEED, size)
    built: dict[tuple[str, str], list[dict[str, Any]]] = {}
    redraws: Counter[str] = Counter()
    for split in SPLITS:
        for task in TASK_SPECS:
            records, images, extra = _draw_split(
                task, split, sizes[split], seed, size, seen
            )
            _write_split(staging, task, split, records, images)
            built[task, split] = records
            redraws[task] += extra
    missing = set(TASKS) - set(TASK_SPECS)
    if missing:
        raise RuntimeError(f"mini-FCIT build lacks tasks {sorted(missing)}")
    stats = {
        task: {
            **task_statistics(task, built[task, "train"], built[task, "test"]),
            "duplicates_redrawn": redraws[task],
        }
        for task in TASK_SPECS
    }
    (staging / "stats.json").write_text(json.dumps(stats, indent=1))
    (staging / ".complete").write_text(json.dumps(params))


def vocabulary_texts() -> list[str]:
    """Words mini-FCIT and the base's pre-training use (tokenizers of test models).

    The tiny base's tokenizer does not need it (byte-level BPE); word-level
    tokenizers of offline test checkpoints are trained on it.
    """
    from fcit_flower.tasks.mini_fcit.drawing import COLOURS, NUMBER_WORDS, PLURALS
    from fcit_flower.tasks.mini_fcit.generators import LETTER, SHORT, TITLES
    from fcit_flower.tasks.mini_fcit.pictures import english_words

    texts = {*english_words(), *COLOURS, *PLURALS, *PLURALS.values(), *TITLES}
    texts |= {*NUMBER_WORDS, *(str(n) for n in range(20)), SHORT, LETTER}
    for spec in TASK_SPECS.values():
        for phrasings in spec.phrasings.values():
            texts |= {*phrasings.train, *phrasings.heldout}
    return sorted(texts)

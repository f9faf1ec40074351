"""mini-FCIT: the embedded benchmark, written in the FCIT data format.

``build_mini_fcit(root)`` writes 12 tasks (see :mod:`fcit_flower.tasks.catalog`) in
the simple FCIT layout: ``<root>/<task>/train.json`` (LLaVA conversations),
``<root>/<task>/test.json`` (``question_id, image, text, answer``) and PNG images
under ``<root>/images/``, paths relative to ``<root>``. Deterministic in ``seed``;
built once (a ``.complete`` marker holds the parameters) under a file lock.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fcit_flower.tasks.catalog import TASKS
from fcit_flower.tasks.mini_fcit import procedural, sources

VERSION = 5
SPLIT_SEED = {"train": 0, "test": 1}


def _rng(seed: int, task: str, split: str) -> np.random.Generator:
    key = [seed, SPLIT_SEED[split], *task.encode()]
    return np.random.default_rng(key)


class _Writer:
    """Collects one task split's records and saves its images."""

    def __init__(self, root: Path, task: str, split: str) -> None:
        self.root, self.task, self.split = root, task, split
        self.records: list[dict[str, Any]] = []

    def save_image(self, image: Image.Image, name: str) -> str:
        relative = f"images/{name}.png"
        path = self.root / relative
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            image.save(path, format="PNG", compress_level=6)
        return relative

    def add(self, image_path: str, question: str, answer: str) -> None:
        index = len(self.records)
        self.records.append(
            {
                "id": f"{self.task}-{self.split}-{index}",
                "image": image_path,
                "question": question,
                "answer": answer,
            }
        )

    def write(self) -> None:
        folder = self.root / self.task
        folder.mkdir(parents=True, exist_ok=True)
        if self.split == "train":
            payload = [
                {
                    "id": r["id"],
                    "image": r["image"],
                    "conversations": [
                        {"from": "human", "value": f"<image>\n{r['question']}"},
                        {"from": "gpt", "value": r["answer"]},
                    ],
                }
                for r in self.records
            ]
        else:
            payload = [
                {
                    "question_id": r["id"],
                    "image": r["image"],
                    "text": r["question"],
                    "answer": r["answer"],
                }
                for r in self.records
            ]
        (folder / f"{self.split}.json").write_text(json.dumps(payload, indent=0))


def _template(rng: np.random.Generator, task: str, fields: dict[str, str]) -> str:
    options = procedural.TEMPLATES[task]
    return options[int(rng.integers(0, len(options)))].format(**fields)


def _build_split(root: Path, split: str, count: int, seed: int, size: int) -> None:
    # Procedural tasks with their own images.
    for task, generator in procedural.GENERATORS.items():
        rng = _rng(seed, task, split)
        writer = _Writer(root, task, split)
        for i in range(count):
            image, fields, answer = generator(rng, size)
            path = writer.save_image(image, f"{task}/{split}-{i}")
            writer.add(path, _template(rng, task, fields), answer)
        writer.write()
    # Dots: the same images for iconqa (count) and clevr-math (count + 1).
    rng = _rng(seed, "dots", split)
    count_w, plus_w = _Writer(root, "iconqa", split), _Writer(root, "clevr-math", split)
    for i in range(count):
        image, number = procedural.dots(rng, size)
        path = count_w.save_image(image, f"dots/{split}-{i}")
        count_w.add(path, _template(rng, "iconqa", {}), str(number))
        plus_w.add(path, _template(rng, "clevr-math", {}), str(number + 1))
    count_w.write()
    plus_w.write()
    # Digits: the same images for imagenet-r (label) and tabmwp (parity).
    rng = _rng(seed, "digits", split)
    label_w, parity_w = (
        _Writer(root, "imagenet-r", split),
        _Writer(root, "tabmwp", split),
    )
    pool = sources.digit_pool(split)
    for index in rng.choice(pool, size=min(count, len(pool)), replace=False):
        image, label = sources.digit_image(int(index), size)
        path = label_w.save_image(image, f"digits/{int(index)}")
        label_w.add(path, _template(rng, "imagenet-r", {}), str(label))
        parity_w.add(
            path, _template(rng, "tabmwp", {}), "even" if label % 2 == 0 else "odd"
        )
    label_w.write()
    parity_w.write()
    # easy-vqa: yes/no questions (aokvqa) and shape questions (super-clevr).
    questions = sources.easy_vqa_questions(split)
    for task, answers in (
        ("aokvqa", sources.YES_NO),
        ("super-clevr", sources.SHAPE_ANSWERS),
    ):
        rng = _rng(seed, task, split)
        pool_idx = [
            i
            for i, (_, a, image_id) in enumerate(questions)
            if a in answers
            and (split == "test" or image_id < sources.EASY_VQA_BENCHMARK_IMAGES)
        ]
        writer = _Writer(root, task, split)
        for i in rng.choice(pool_idx, size=min(count, len(pool_idx)), replace=False):
            question, answer, image_id = questions[int(i)]
            image = sources.easy_vqa_image(split, image_id, size)
            path = writer.save_image(image, f"easyvqa/{split}-{image_id}")
            writer.add(path, question[0].upper() + question[1:], answer)
        writer.write()


def build_mini_fcit(
    root: Path,
    *,
    seed: int = 0,
    train_size: int = 400,
    test_size: int = 50,
    image_size: int = 32,
) -> Path:
    """Write (once) the 12 mini-FCIT tasks under ``root`` and return ``root``.

    Parameters
    ----------
    root : Path
        Output directory (created atomically: built aside, then renamed).
    seed : int
        Data seed; the same seed gives byte-identical files.
    train_size, test_size : int
        Samples per task and split.
    image_size : int
        Side of the square RGB images.
    """
    params = {
        "version": VERSION,
        "seed": seed,
        "train_size": train_size,
        "test_size": test_size,
        "image_size": image_size,
    }
    marker = root / ".complete"
    if marker.exists() and json.loads(marker.read_text()) == params:
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists() and json.loads(marker.read_text()) == params:
            return root
        staging = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}-"))
        try:
            _build_split(staging, "train", train_size, seed, image_size)
            _build_split(staging, "test", test_size, seed, image_size)
            missing = set(TASKS) - {p.name for p in staging.iterdir() if p.is_dir()}
            if missing:
                raise RuntimeError(f"mini-FCIT build lacks tasks {sorted(missing)}")
            (staging / ".complete").write_text(json.dumps(params))
            if root.exists():
                shutil.rmtree(root)
            os.replace(staging, root)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return root


def vocabulary_texts() -> list[str]:
    """Every text mini-FCIT can contain, whatever its sizes and seed.

    The tiny base's tokenizer is trained on these (plus its pre-training captions),
    so one cached base serves every mini-FCIT configuration.
    """
    from fcit_flower.tasks.mini_fcit.drawing import PALETTE, SHAPES

    texts = {
        "yes",
        "no",
        "even",
        "odd",
        *PALETTE,
        *SHAPES,
        *procedural.QUADRANTS,
        *procedural.WORDS,
        *(str(n) for n in range(11)),
        "a an and",
    }
    for templates in procedural.TEMPLATES.values():
        for template in templates:
            texts.add(
                template.format(
                    shape=" ".join(SHAPES), a=" ".join(PALETTE), b=" ".join(PALETTE)
                )
            )
    for split in ("train", "test"):
        for question, answer, _ in sources.easy_vqa_questions(split):
            texts.add(question)
            texts.add(answer)
    return sorted(texts)

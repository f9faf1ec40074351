"""Real data shipped by packages: easy-vqa images/questions, scikit-learn digits."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image

YES_NO = ("yes", "no")
# easy-vqa's train split has 4000 images: the benchmark uses ids below 3000, the base
# pre-training the rest.
EASY_VQA_BENCHMARK_IMAGES = 3000
EASY_VQA_TRAIN_IMAGES = 4000
SHAPE_ANSWERS = ("circle", "rectangle", "triangle")
# sklearn's 1797 digits, shuffled once: base pre-training, benchmark train, test.
DIGITS_PRETRAIN_POOL = 600
DIGITS_TEST_POOL = 297


@lru_cache(maxsize=2)
def easy_vqa_questions(split: str) -> tuple[tuple[str, str, int], ...]:
    """(question, answer, image id) triples of an easy-vqa split."""
    import easy_vqa  # type: ignore[import-untyped]

    getter = (
        easy_vqa.get_train_questions
        if split == "train"
        else easy_vqa.get_test_questions
    )
    questions, answers, image_ids = getter()
    return tuple(zip(questions, answers, (int(i) for i in image_ids), strict=True))


@lru_cache(maxsize=1)
def _easy_vqa_train_attributes() -> dict[int, dict[str, str]]:
    colours = ("red", "green", "blue", "black", "gray", "teal", "brown", "yellow")
    found: dict[int, dict[str, str]] = {}
    for question, answer, image_id in easy_vqa_questions("train"):
        facts = found.setdefault(image_id, {})
        named = [w.strip("?") for w in question.split()]
        if answer in SHAPE_ANSWERS:
            facts["shape"] = answer
            facts.update(("colour", w) for w in named if w in colours)
        elif answer in colours:
            facts["colour"] = answer
            facts.update(("shape", w) for w in named if w in SHAPE_ANSWERS)
        elif answer == "yes" and " not " not in question and " no " not in question:
            facts.update(("colour", w) for w in named if w in colours)
            facts.update(("shape", w) for w in named if w in SHAPE_ANSWERS)
    return found


def easy_vqa_attributes(image_id: int) -> tuple[str, str]:
    """(colour, shape) of an easy-vqa train image, read off its own questions."""
    attributes = _easy_vqa_train_attributes().get(image_id, {})
    return attributes.get("colour", "some"), attributes.get("shape", "shape")


def easy_vqa_image(split: str, image_id: int, size: int) -> Image.Image:
    """An easy-vqa image (64 x 64 in the package) resized to ``size``."""
    import easy_vqa

    paths = (
        easy_vqa.get_train_image_paths()
        if split == "train"
        else easy_vqa.get_test_image_paths()
    )
    with Image.open(paths[image_id]) as image:
        return image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)


@lru_cache(maxsize=1)
def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images 8x8 in 0-16, labels, seeded permutation) of scikit-learn's digits."""
    from sklearn.datasets import load_digits  # type: ignore[import-untyped]

    bunch = load_digits()
    order = np.random.default_rng(1797).permutation(len(bunch.target))
    return bunch.images, bunch.target, order


def digit_pool(split: str) -> np.ndarray:
    """Indices of the digits reserved for ``split`` (disjoint pools)."""
    _, _, order = digits()
    if split == "pretrain":
        return order[:DIGITS_PRETRAIN_POOL]
    if split == "test":
        return order[-DIGITS_TEST_POOL:]
    return order[DIGITS_PRETRAIN_POOL:-DIGITS_TEST_POOL]


def digit_image(index: int, size: int) -> tuple[Image.Image, int]:
    """A digit as a white-on-black RGB image of ``size`` and its label."""
    images, labels, _ = digits()
    grey = (images[index] * (255.0 / 16.0)).astype(np.uint8)
    image = Image.fromarray(grey, mode="L").resize(
        (size, size), Image.Resampling.NEAREST
    )
    return image.convert("RGB"), int(labels[index])

"""Real images shipped by packages: easy-vqa shapes and scikit-learn digits.

Each source is cut into disjoint pools by image index, so a benchmark split never
reuses another split's picture (pixel-level duplicates are removed on top, see
:mod:`fcit_flower.tasks.mini_fcit.pixels`). The tiny base's pre-training uses
no easy-vqa image and only its own pool of digits.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image

from fcit_flower.tasks.mini_fcit.drawing import COLOURS, PALETTE, pick, to_array

# easy-vqa: 4000 train and 1000 test images (64 x 64, one coloured shape each).
EASY_VQA_COLOURS = ("red", "green", "blue", "black", "gray", "teal", "brown", "yellow")
EASY_VQA_SHAPES = ("circle", "rectangle", "triangle")

# sklearn's 1797 digits, shuffled once, cut into disjoint pools (the tiny base's
# pre-training has its own).
DIGIT_POOLS = {
    "pretrain": (0, 500),
    "train": (500, 1300),
    "val": (1300, 1500),
    "test": (1500, 1797),
}


@lru_cache(maxsize=1)
def _easy_vqa_facts() -> dict[tuple[str, int], tuple[str, str]]:
    """(split, image id) -> (colour, shape), read off easy-vqa's own questions."""
    import easy_vqa  # type: ignore[import-untyped]

    facts: dict[tuple[str, int], dict[str, str]] = {}
    for split, getter in (
        ("train", easy_vqa.get_train_questions),
        ("test", easy_vqa.get_test_questions),
    ):
        for question, answer, image_id in zip(*getter(), strict=True):
            found = facts.setdefault((split, int(image_id)), {})
            if answer in EASY_VQA_SHAPES:
                found["shape"] = answer
            elif answer in EASY_VQA_COLOURS:
                found["colour"] = answer
            elif answer == "yes" and " not " not in question and " no " not in question:
                words = [w.strip("?") for w in question.split()]
                found.update(("colour", w) for w in words if w in EASY_VQA_COLOURS)
                found.update(("shape", w) for w in words if w in EASY_VQA_SHAPES)
    return {
        key: (value["colour"], value["shape"])
        for key, value in facts.items()
        if "colour" in value and "shape" in value
    }


def easy_vqa_pool(split: str) -> list[tuple[str, int]]:
    """(easy-vqa split, image id) of the images reserved for a benchmark split.

    Benchmark train: easy-vqa's train images; val and test: its test images, cut
    in two halves. Only images whose colour and shape are known are listed.
    """
    facts = _easy_vqa_facts()
    if split == "train":
        ids = [("train", i) for i in range(4000)]
    elif split == "val":
        ids = [("test", i) for i in range(0, 500)]
    else:
        ids = [("test", i) for i in range(500, 1000)]
    return [key for key in ids if key in facts]


def easy_vqa_facts(key: tuple[str, int]) -> tuple[str, str]:
    """(colour, shape) of an easy-vqa image."""
    return _easy_vqa_facts()[key]


def easy_vqa_image(key: tuple[str, int], size: int) -> np.ndarray:
    """An easy-vqa image resized to ``size``."""
    import easy_vqa

    split, image_id = key
    paths = (
        easy_vqa.get_train_image_paths()
        if split == "train"
        else easy_vqa.get_test_image_paths()
    )
    with Image.open(paths[image_id]) as image:
        rgb = image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
        return to_array(rgb)


@lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits  # type: ignore[import-untyped]

    bunch = load_digits()
    order = np.random.default_rng(1797).permutation(len(bunch.target))
    return bunch.images, bunch.target, order


def digit_pool(split: str) -> np.ndarray:
    """Indices of the sklearn digits reserved for a benchmark split."""
    _, _, order = _digits()
    start, stop = DIGIT_POOLS[split]
    return order[start:stop]


def digit_rendition(
    rng: np.random.Generator, index: int, size: int
) -> tuple[np.ndarray, int]:
    """A handwritten digit drawn as a random "rendition" and its label.

    Renditions vary scale, position, ink colour, paper tint and polarity (light ink
    on dark paper), as ImageNet-R varies the style of one object class.
    """
    images, labels, _ = _digits()
    strength = images[index] / 16.0  # 8 x 8 ink in [0, 1]
    side = int(rng.integers(size // 2, size - 3))
    ink = Image.fromarray((strength * 255).astype(np.uint8), mode="L").resize(
        (side, side), Image.Resampling.BILINEAR
    )
    alpha = np.zeros((size, size), dtype=np.float32)
    x0 = int(rng.integers(0, size - side + 1))
    y0 = int(rng.integers(0, size - side + 1))
    alpha[y0 : y0 + side, x0 : x0 + side] = np.asarray(ink, dtype=np.float32) / 255
    colour = np.array(PALETTE[pick(rng, COLOURS)], dtype=np.float32)
    paper = rng.integers(215, 256, size=3).astype(np.float32)
    if rng.random() < 0.25:  # light ink on dark paper
        colour, paper = 255.0 - colour * 0.3, paper * 0.25
    mixed = alpha[..., None] * colour + (1 - alpha[..., None]) * paper
    return np.clip(mixed, 0, 255).round().astype(np.uint8), int(labels[index])

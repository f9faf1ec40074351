"""How each mini-FCIT task draws an item: the image, question type, fields, answer.

A generator takes the split's random stream and returns ``(pixels, question type,
template fields, answer)``; :mod:`fcit_flower.tasks.mini_fcit.tasks` holds the
phrasings and the builder picks one.
"""

from __future__ import annotations

import numpy as np

from fcit_flower.tasks.mini_fcit import sources
from fcit_flower.tasks.mini_fcit.drawing import (
    COLOURS,
    PALETTE,
    PLURALS,
    SHAPES,
    bar_chart,
    cell_box,
    distinct_heights,
    format_box,
    pick,
    pick_distinct,
    rendition,
    scene,
    text_image,
)

SHORT = "Answer the question using a single word or phrase."
LETTER = "Answer with the option's letter from the given choices directly."
LETTERS = "ABCD"
# Titles of mini-FCIT's book covers; the base's pre-training never shows them.
TITLES = (
    "moon",
    "fish",
    "tree",
    "rain",
    "gold",
    "wolf",
    "star",
    "lake",
    "fire",
    "snow",
    "bird",
    "rose",
    "ship",
    "king",
    "wind",
    "leaf",
)

# (pixels, question type, template fields, answer)
Item = tuple[np.ndarray, str, dict[str, str], str]


def multiple_choice(
    rng: np.random.Generator, correct: str, pool: tuple[str, ...] | list[str]
) -> tuple[str, str]:
    """Four options (``correct`` + 3 others of ``pool``) as text, and its letter."""
    others = pick_distinct(rng, [p for p in pool if p != correct], 3)
    options = [correct, *others]
    order = rng.permutation(4)
    shuffled = [options[int(i)] for i in order]
    lines = "\n".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(shuffled))
    return lines, LETTERS[shuffled.index(correct)]


def _objects(rng: np.random.Generator, count: int) -> list[tuple[str, str]]:
    """``count`` distinct (colour, shape) pairs."""
    pairs = [(c, s) for c in COLOURS for s in SHAPES]
    return [pairs[int(i)] for i in rng.choice(len(pairs), count, replace=False)]


# ------------------------------------------------------------------ General


def imagenet_r(rng: np.random.Generator, size: int, split: str) -> Item:
    """Name the object (a shape) drawn in a random rendition style."""
    shape = pick(rng, SHAPES)
    return rendition(rng, size, shape, pick(rng, COLOURS)), "object", {}, shape


def iconqa(rng: np.random.Generator, size: int, split: str) -> Item:
    """Count the icons of one shape, with at most one icon of another shape.

    Real IconQA counting pictures mostly show only the icons to count; with 0-3
    other icons (v2.3) centralized MTL beat the majority class by only 9 points
    (BENCHMARKS.md, "mini-FCIT v2.4").
    """
    target = pick(rng, SHAPES)
    count = int(rng.integers(1, 7))
    distractors = int(rng.integers(0, 2))
    others = [s for s in SHAPES if s != target]
    objects = [(pick(rng, COLOURS), target) for _ in range(count)]
    objects += [(pick(rng, COLOURS), pick(rng, others)) for _ in range(distractors)]
    pixels, _ = scene(rng, size, objects)
    return pixels, "count", {"plural": PLURALS[target]}, str(count)


def grounding(rng: np.random.Generator, size: int, split: str) -> Item:
    """Box of the named object among 2-4 objects (a 4 x 4 grid of cells)."""
    objects = _objects(rng, int(rng.integers(2, 5)))
    pixels, cells = scene(rng, size, objects)
    target = int(rng.integers(0, len(objects)))
    colour, shape = objects[target]
    fields = {"colour": colour, "shape": shape}
    return pixels, "box", fields, format_box(cell_box(cells[target]))


def aokvqa(rng: np.random.Generator, size: int, split: str) -> Item:
    """Multiple-choice colour or shape question on a real easy-vqa image."""
    pool = sources.easy_vqa_pool(split)
    key = pool[int(rng.integers(0, len(pool)))]
    colour, shape = sources.easy_vqa_facts(key)
    pixels = sources.easy_vqa_image(key, size)
    if rng.random() < 0.5:
        options, letter = multiple_choice(rng, colour, sources.EASY_VQA_COLOURS)
        return pixels, "colour", {"options": options}, letter
    options, letter = multiple_choice(
        rng, shape, (*sources.EASY_VQA_SHAPES, "star", "square")
    )
    return pixels, "shape", {"options": options}, letter


# ------------------------------------------------------------------ Chart


def _bars(
    rng: np.random.Generator, size: int, low: int, high: int, *, gap: int = 4
) -> tuple[np.ndarray, list[str], list[int]]:
    """A chart of ``low``-``high`` bars of distinct colours and heights."""
    count = int(rng.integers(low, high + 1))
    colours = pick_distinct(rng, COLOURS, count)
    heights = distinct_heights(rng, count, size, gap=gap)
    return bar_chart(rng, size, colours, heights), colours, heights


def arxivqa(rng: np.random.Generator, size: int, split: str) -> Item:
    """The colour of the tallest or the shortest of 2-3 bars."""
    pixels, colours, heights = _bars(rng, size, 2, 3, gap=8)
    tallest = rng.random() < 0.5
    index = int(np.argmax(heights) if tallest else np.argmin(heights))
    fields = {
        "extreme": "tallest" if tallest else "shortest",
        "level": "highest" if tallest else "lowest",
    }
    return pixels, "extreme", fields, colours[index]


def figureqa(rng: np.random.Generator, size: int, split: str) -> Item:
    """Yes/no: does the tallest bar rise above the chart's middle gridline.

    Half the charts have one bar above the line, the rest have every bar below
    it; each bar ends at least 4 pixels (half an image patch) from the line, so
    the answer is visible at 32 x 32. No bar is named: with a colour to bind
    (mini-FCIT v2.2) a LoRA learnt the task alone but not pooled with the other
    tasks, where it answered the shape words of super-CLEVR's colour questions.
    """
    count = int(rng.integers(2, 4))
    colours = pick_distinct(rng, COLOURS, count)
    middle = size // 2
    heights = [int(rng.integers(4, middle - 4)) for _ in range(count)]
    if rng.random() < 0.5:
        heights[int(rng.integers(0, count))] = int(rng.integers(middle + 4, size - 3))
    pixels = bar_chart(rng, size, colours, heights, grid_levels=2)
    answer = "yes" if max(heights) > middle else "no"
    return pixels, "above-middle", {}, answer


def dvqa(rng: np.random.Generator, size: int, split: str) -> Item:
    """Value (1-5) of a named bar on a chart with five gridlines."""
    count = int(rng.integers(1, 4))
    colours = pick_distinct(rng, COLOURS, count)
    values = [int(v) for v in rng.integers(1, 6, size=count)]
    heights = [v * (size - 2) // 5 for v in values]
    pixels = bar_chart(rng, size, colours, heights, grid_levels=5)
    index = int(rng.integers(0, count))
    return pixels, "value", {"colour": colours[index]}, str(values[index])


# ------------------------------------------------------------------ Math


def clevr_math(rng: np.random.Generator, size: int, split: str) -> Item:
    """Remove every object of a colour or a shape; how many objects are left."""
    total = int(rng.integers(3, 9))
    removed = int(rng.integers(1, min(4, total)))
    by_colour = rng.random() < 0.5
    if by_colour:
        colour = pick(rng, COLOURS)
        rest = [c for c in COLOURS if c != colour]
        objects = [(colour, pick(rng, SHAPES)) for _ in range(removed)]
        objects += [
            (pick(rng, rest), pick(rng, SHAPES)) for _ in range(total - removed)
        ]
        target = f"{colour} objects"
    else:
        shape = pick(rng, SHAPES)
        rest = [s for s in SHAPES if s != shape]
        objects = [(pick(rng, COLOURS), shape) for _ in range(removed)]
        objects += [
            (pick(rng, COLOURS), pick(rng, rest)) for _ in range(total - removed)
        ]
        target = PLURALS[shape]
    pixels, _ = scene(rng, size, objects)
    return pixels, "subtract", {"target": target}, str(total - removed)


def super_clevr(rng: np.random.Generator, size: int, split: str) -> Item:
    """Attribute questions on 2-3 objects of distinct colours and shapes."""
    count = int(rng.integers(2, 4))
    colours = pick_distinct(rng, COLOURS, count)
    shapes = pick_distinct(rng, SHAPES, count)
    objects = list(zip(colours, shapes, strict=True))
    pixels, _ = scene(rng, size, objects)
    index = int(rng.integers(0, count))
    if rng.random() < 0.5:
        return pixels, "colour-of", {"shape": shapes[index]}, colours[index]
    return pixels, "shape-of", {"colour": colours[index]}, shapes[index]


def tabmwp(rng: np.random.Generator, size: int, split: str) -> Item:
    """Arithmetic on a pictured number: the digit plus 1, 2 or 3."""
    index = int(rng.choice(sources.digit_pool(split)))
    pixels, label = sources.digit_rendition(rng, index, size)
    added = int(rng.integers(1, 4))
    return pixels, "add", {"n": str(added)}, str(label + added)


# ------------------------------------------------------------------ Other


def flickr30k(rng: np.random.Generator, size: int, split: str) -> Item:
    """A brief caption of 1-3 objects, listed in reading order."""
    objects = _objects(rng, int(rng.integers(1, 4)))
    pixels, cells = scene(rng, size, objects)
    ordered = [objects[i] for i in np.argsort(cells)]
    parts = [f"{'an' if c[0] in 'aeiou' else 'a'} {c} {s}" for c, s in ordered]
    caption = (
        parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    )
    return pixels, "caption", {}, caption


def ocr_vqa(rng: np.random.Generator, size: int, split: str) -> Item:
    """The colour in which a book's title is printed on its cover."""
    title = pick(rng, TITLES)
    colour = pick(rng, COLOURS)
    pixels = text_image(rng, size, title, fill=PALETTE[colour])
    return pixels, "title-colour", {}, colour

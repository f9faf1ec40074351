"""The 12 mini-FCIT tasks: what each one asks, how it draws an item, its phrasings.

Each task stands in for one FCIT dataset (see :mod:`fcit_flower.tasks.catalog`) and
keeps that dataset's answer style: a word or number with the LLaVA short-answer
suffix, an option letter for multiple choice, a box for grounding, a caption for
Flickr30k. A task has several *train* phrasings per question type and a disjoint
set of *held-out* phrasings that only val and test items use, so a method cannot
route or answer by matching instruction strings it has seen.

A generator takes the split's random stream and returns ``(pixels, question type,
template fields, answer)``; the builder picks the phrasing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from fcit_flower.tasks.mini_fcit import sources
from fcit_flower.tasks.mini_fcit.drawing import (
    COLOURS,
    PLURALS,
    SHAPES,
    bar_chart,
    cell_box,
    distinct_heights,
    format_box,
    pick,
    pick_distinct,
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


@dataclass(frozen=True)
class Phrasings:
    """Train and held-out templates of one question type, and the answer suffix."""

    train: tuple[str, ...]
    heldout: tuple[str, ...]
    suffix: str = SHORT


@dataclass(frozen=True)
class TaskSpec:
    """How mini-FCIT builds one task.

    Attributes
    ----------
    generate : callable
        ``(rng, size, split) -> Item``.
    phrasings : dict
        Question type -> :class:`Phrasings`.
    chance : float
        Accuracy of a uniform guess over the task's answer space, in percent.
    """

    generate: Callable[[np.random.Generator, int, str], Item]
    phrasings: dict[str, Phrasings]
    chance: float


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
    """Classify a handwritten digit drawn in a random style (renditions)."""
    index = int(rng.choice(sources.digit_pool(split)))
    pixels, label = sources.digit_rendition(rng, index, size)
    return pixels, "digit", {}, str(label)


def iconqa(rng: np.random.Generator, size: int, split: str) -> Item:
    """Count the icons of one shape among icons of other shapes."""
    target = pick(rng, SHAPES)
    count = int(rng.integers(1, 7))
    distractors = int(rng.integers(0, 4))
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


def arxivqa(rng: np.random.Generator, size: int, split: str) -> Item:
    """Multiple choice: the tallest or the shortest of 3-4 bars."""
    count = int(rng.integers(3, 5))
    colours = pick_distinct(rng, COLOURS, count)
    heights = distinct_heights(rng, count, size)
    pixels = bar_chart(rng, size, colours, heights)
    tallest = rng.random() < 0.5
    index = int(np.argmax(heights) if tallest else np.argmin(heights))
    options, letter = multiple_choice(rng, colours[index], COLOURS)
    fields = {
        "extreme": "tallest" if tallest else "shortest",
        "level": "highest" if tallest else "lowest",
        "options": options,
    }
    return pixels, "extreme", fields, letter


def figureqa(rng: np.random.Generator, size: int, split: str) -> Item:
    """Yes/no: is a named bar the maximum, the minimum, or above another one."""
    count = int(rng.integers(2, 5))
    colours = pick_distinct(rng, COLOURS, count)
    heights = distinct_heights(rng, count, size)
    pixels = bar_chart(rng, size, colours, heights)
    want_yes = rng.random() < 0.5
    kind = pick(rng, ("maximum", "minimum", "greater"))
    order = np.argsort(heights)
    if kind == "greater":
        first, second = (int(i) for i in rng.choice(count, 2, replace=False))
        if (heights[first] > heights[second]) != want_yes:
            first, second = second, first
        fields = {"a": colours[first], "b": colours[second]}
        return pixels, kind, fields, "yes" if want_yes else "no"
    extreme = int(order[-1] if kind == "maximum" else order[0])
    others = [i for i in range(count) if i != extreme]
    index = extreme if want_yes else int(rng.choice(others))
    return pixels, kind, {"a": colours[index]}, "yes" if want_yes else "no"


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
        objects += [(pick(rng, rest), pick(rng, SHAPES)) for _ in range(total - removed)]
        target = f"{colour} objects"
    else:
        shape = pick(rng, SHAPES)
        rest = [s for s in SHAPES if s != shape]
        objects = [(pick(rng, COLOURS), shape) for _ in range(removed)]
        objects += [(pick(rng, COLOURS), pick(rng, rest)) for _ in range(total - removed)]
        target = PLURALS[shape]
    pixels, _ = scene(rng, size, objects)
    return pixels, "subtract", {"target": target}, str(total - removed)


def super_clevr(rng: np.random.Generator, size: int, split: str) -> Item:
    """Attribute questions on a scene of 2-5 objects with distinct colours and shapes."""
    count = int(rng.integers(2, 6))
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
    caption = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return pixels, "caption", {}, caption


def ocr_vqa(rng: np.random.Generator, size: int, split: str) -> Item:
    """The title printed on a plain book cover."""
    title = pick(rng, TITLES)
    cover = tuple(int(v) for v in rng.integers(0, 256, size=3))
    ink = (255, 255, 255) if sum(cover) < 380 else (0, 0, 0)
    pixels = text_image(rng, size, title, fill=ink, paper=cover)  # type: ignore[arg-type]
    return pixels, "title", {}, title


def _options(question: str) -> str:
    return question + "\n{options}"


TASK_SPECS: dict[str, TaskSpec] = {
    "imagenet-r": TaskSpec(
        imagenet_r,
        {
            "digit": Phrasings(
                (
                    "What digit is shown in the image?",
                    "Which digit does this picture show?",
                    "What number is drawn here?",
                    "Identify the digit in the image.",
                    "What is the handwritten digit?",
                ),
                (
                    "Tell me which digit appears in this picture.",
                    "What numeral is depicted?",
                    "Which single digit is written in the image?",
                ),
            )
        },
        chance=10.0,
    ),
    "iconqa": TaskSpec(
        iconqa,
        {
            "count": Phrasings(
                (
                    "How many {plural} are there?",
                    "How many {plural} are in the picture?",
                    "Count the {plural} in the image.",
                    "What is the number of {plural}?",
                    "How many {plural} can you count?",
                ),
                (
                    "Tell me how many {plural} the picture contains.",
                    "What is the total count of {plural} shown?",
                    "How many {plural} does this image have?",
                ),
            )
        },
        chance=100 / 6,
    ),
    "grounding": TaskSpec(
        grounding,
        {
            "box": Phrasings(
                (
                    "Please provide the bounding box coordinate of the region this "
                    "sentence describes: the {colour} {shape}.",
                    "Give the bounding box of the {colour} {shape}.",
                    "Where is the {colour} {shape}? Answer with a bounding box.",
                    "Locate the {colour} {shape} and give its box coordinates.",
                    "Output the box coordinates of the {colour} {shape}.",
                ),
                (
                    "Find the {colour} {shape} in the picture and reply with its "
                    "bounding box.",
                    "What are the coordinates of the box around the {colour} {shape}?",
                    "Mark the {colour} {shape} with a bounding box.",
                ),
                suffix="",
            )
        },
        chance=100 / 16,
    ),
    "aokvqa": TaskSpec(
        aokvqa,
        {
            "colour": Phrasings(
                tuple(
                    _options(q)
                    for q in (
                        "What color is the shape?",
                        "Which color does the object in the image have?",
                        "What is the color of the shape in the picture?",
                        "The shape is painted in which color?",
                    )
                ),
                tuple(
                    _options(q)
                    for q in (
                        "Looking at the figure, what color has it been given?",
                        "Of these colors, which one matches the object?",
                    )
                ),
                suffix=LETTER,
            ),
            "shape": Phrasings(
                tuple(
                    _options(q)
                    for q in (
                        "What shape is in the image?",
                        "Which shape is shown?",
                        "What kind of shape does the picture contain?",
                        "The object in the image has which shape?",
                    )
                ),
                tuple(
                    _options(q)
                    for q in (
                        "Looking at the figure, what form does it take?",
                        "Of these shapes, which one is drawn?",
                    )
                ),
                suffix=LETTER,
            ),
        },
        chance=25.0,
    ),
    "arxivqa": TaskSpec(
        arxivqa,
        {
            "extreme": Phrasings(
                tuple(
                    _options(q)
                    for q in (
                        "Which bar is the {extreme} in the chart?",
                        "Which color is the {extreme} bar?",
                        "In the chart, which bar is the {extreme}?",
                        "Identify the {extreme} bar in the figure.",
                        "What is the color of the {extreme} bar shown?",
                    )
                ),
                tuple(
                    _options(q)
                    for q in (
                        "Which bar in the figure reaches the {level} value?",
                        "Looking at the plot, which series has the {level} value?",
                        "According to the graph, which bar is at the {level} level?",
                    )
                ),
                suffix=LETTER,
            )
        },
        chance=25.0,
    ),
    "figureqa": TaskSpec(
        figureqa,
        {
            "maximum": Phrasings(
                (
                    "Is {a} the maximum?",
                    "Does {a} have the highest value?",
                    "Is the {a} bar the tallest one?",
                ),
                ("Is {a} higher than every other bar?", "Does {a} reach the top value?"),
            ),
            "minimum": Phrasings(
                (
                    "Is {a} the minimum?",
                    "Does {a} have the lowest value?",
                    "Is the {a} bar the shortest one?",
                ),
                ("Is {a} lower than every other bar?", "Does {a} show the least value?"),
            ),
            "greater": Phrasings(
                (
                    "Is {a} greater than {b}?",
                    "Is the {a} bar taller than the {b} bar?",
                    "Does {a} have a higher value than {b}?",
                ),
                ("Is {a} above {b} in this chart?", "Does {a} exceed {b}?"),
            ),
        },
        chance=50.0,
    ),
    "dvqa": TaskSpec(
        dvqa,
        {
            "value": Phrasings(
                (
                    "What is the value of the {colour} bar?",
                    "What value does the {colour} bar have?",
                    "How high is the {colour} bar on the value axis?",
                    "Read the value of the {colour} bar.",
                ),
                (
                    "According to the gridlines, what does the {colour} bar show?",
                    "Which value is reached by the {colour} bar?",
                ),
            )
        },
        chance=20.0,
    ),
    "clevr-math": TaskSpec(
        clevr_math,
        {
            "subtract": Phrasings(
                (
                    "Subtract all {target}. How many objects are left?",
                    "Take away all {target}. How many objects remain?",
                    "Remove all {target}. How many objects are left?",
                    "If you subtract all {target}, how many objects remain?",
                    "Subtract every one of the {target}. How many objects are there now?",
                ),
                (
                    "After removing the {target}, how many objects are still there?",
                    "Once all {target} are taken away, what is the number of "
                    "remaining objects?",
                    "How many objects remain if every one of the {target} is removed?",
                ),
            )
        },
        chance=100 / 7,
    ),
    "super-clevr": TaskSpec(
        super_clevr,
        {
            "colour-of": Phrasings(
                (
                    "What color is the {shape}?",
                    "The {shape} has what color?",
                    "What is the color of the {shape}?",
                ),
                ("Which color was used for the {shape}?", "Tell me the {shape}'s color."),
            ),
            "shape-of": Phrasings(
                (
                    "What shape is the {colour} object?",
                    "The {colour} object has what shape?",
                    "What is the shape of the {colour} thing?",
                ),
                (
                    "Which shape does the {colour} item have?",
                    "Tell me the shape of the {colour} one.",
                ),
            ),
        },
        chance=100 * (0.5 / len(COLOURS) + 0.5 / len(SHAPES)),
    ),
    "tabmwp": TaskSpec(
        tabmwp,
        {
            "add": Phrasings(
                (
                    "What is the number in the image plus {n}?",
                    "Add {n} to the number shown. What is the result?",
                    "If you add {n} to the pictured number, what do you get?",
                    "What do you get when {n} is added to the digit in the image?",
                ),
                (
                    "Increase the number in the picture by {n}. What is it now?",
                    "What is the sum of {n} and the digit shown?",
                ),
            )
        },
        chance=100 / 12,
    ),
    "flickr30k": TaskSpec(
        flickr30k,
        {
            "caption": Phrasings(
                (
                    "Describe the image briefly.",
                    "Give a short description of this picture.",
                    "Provide a brief caption for the image.",
                    "Summarize what the image shows.",
                    "Write a concise caption of the picture.",
                ),
                (
                    "What is in this picture? Answer with a short caption.",
                    "Offer a succinct account of the image.",
                    "Caption this picture in a few words.",
                ),
                suffix="",
            )
        },
        chance=0.0,
    ),
    "ocr-vqa": TaskSpec(
        ocr_vqa,
        {
            "title": Phrasings(
                (
                    "What is the title of this book?",
                    "What is the name of this book?",
                    "Which title is printed on this cover?",
                    "What does the book cover say?",
                    "Read the title of this book.",
                ),
                (
                    "What book is this?",
                    "Tell me the title written on the cover.",
                    "Which word forms the title of this book?",
                ),
            )
        },
        chance=100 / len(TITLES),
    ),
}


def instruction(
    spec: TaskSpec, kind: str, fields: dict[str, str], template: str
) -> str:
    """The full instruction: the filled template and the task's answer suffix."""
    text = template.format(**fields)
    suffix = spec.phrasings[kind].suffix
    return f"{text}\n{suffix}" if suffix else text

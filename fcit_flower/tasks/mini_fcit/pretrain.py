"""Training data of the tiny base: its stand-in for LLaVA's own two stages.

Stage 1, feature alignment (:func:`alignment_corpus`): generic "describe" requests
answered with a full description of the picture (every attribute the vision tower
must learn to see). Stage 2, instruction tuning (:func:`pretraining_corpus`): the
question families below, plus descriptions. A real LLaVA follows instructions
before any FCIT stage: it names colours and shapes, answers yes/no and option
letters, captions, reads words and numbers, locates objects and does small sums.
The tiny base learns these *formats and perceptual skills* here, on pictures of
its own (:mod:`~fcit_flower.tasks.mini_fcit.pictures`): objects, scenes, bar charts,
handwritten digits from a pool that no mini-FCIT split uses, printed digits and
rendered words. No mini-FCIT image is in it (the builder drops any pixel-identical
draw), and no benchmark instruction, counting of one kind of object, subtraction
over a scene, box coordinate or comparison of two bars, so the benchmark's skills
must be learned by fine-tuning, while zero-shot answers already have the right
shape on some tasks.

Everything is a function of the seed; :func:`base_corpus` is the whole data set
(both stages) and :func:`pretraining_texts` its text, on which the tokenizer is
trained.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from fcit_flower.tasks.mini_fcit.drawing import (
    COLOURS,
    NUMBER_WORDS,
    SHAPES,
    bar_chart,
    blank,
    pick,
    pick_distinct,
    single_object,
)
from fcit_flower.tasks.mini_fcit.generators import LETTER, LETTERS, SHORT
from fcit_flower.tasks.mini_fcit.pictures import (
    HEIGHT_WORDS,
    chart_picture,
    digit_picture,
    english_words,
    object_picture,
    quadrant,
    scene_picture,
    side,
    word_picture,
)

# (pixels, instruction, answer)
Example = tuple[np.ndarray, str, str]
CORPUS_VERSION = 5
# The base's corpus: its size and seed (mini-FCIT excludes exactly these images).
CORPUS_EXAMPLES = 24000
ALIGNMENT_EXAMPLES = 16000
CORPUS_SEED = 0


def _suffix(rng: np.random.Generator, question: str) -> str:
    # LLaVA's short-answer suffix on some requests, as in its own training mix.
    return f"{question}\n{SHORT}" if rng.random() < 0.5 else question


# ------------------------------------------------------------ stage 2: families


def colour_question(rng: np.random.Generator, size: int) -> Example:
    """Name the colour of the one object."""
    pixels, shape, colour, _, _ = object_picture(rng, size)
    question = pick(
        rng,
        (
            f"What color is the {shape}?",
            "What color is this object?",
            "Name the color of the shape.",
        ),
    )
    return pixels, _suffix(rng, question), colour


def shape_question(rng: np.random.Generator, size: int) -> Example:
    """Name the shape of the one object."""
    pixels, shape, colour, _, _ = object_picture(rng, size)
    question = pick(
        rng,
        (
            "What shape is this?",
            "Which shape is in the picture?",
            f"What is the shape of the {colour} object?",
        ),
    )
    return pixels, _suffix(rng, question), shape


def exists_question(rng: np.random.Generator, size: int) -> Example:
    """Is there an object of a given colour and shape in a scene (half: yes)."""
    pixels, objects, _ = scene_picture(rng, size, 1, 5)
    if rng.random() < 0.5:
        colour, shape = objects[int(rng.integers(0, len(objects)))]
    else:
        colour, shape = pick(rng, COLOURS), pick(rng, SHAPES)
    answer = "yes" if (colour, shape) in objects else "no"
    question = pick(
        rng,
        (
            f"Is there a {colour} {shape} in the image?",
            f"Does the picture show a {colour} {shape}?",
        ),
    )
    return pixels, _suffix(rng, question), answer


def yes_no_question(rng: np.random.Generator, size: int) -> Example:
    """Yes/no on an object's colour or shape, or an end bar's colour (half: yes).

    Grounds "yes" and "no" in what the base sees, as LLaVA's own instruction data
    does; no height, count or comparison is asked.
    """
    kind = int(rng.integers(0, 3))
    if kind == 2:
        pixels, colours, _ = chart_picture(rng, size)
        end = pick(rng, ("leftmost", "rightmost"))
        truth, pool = (colours[0] if end == "leftmost" else colours[-1]), COLOURS
        templates: tuple[str, ...] = (f"Is the {end} bar {{}}?",)
    else:
        pixels, shape, colour, _, _ = object_picture(rng, size)
        truth, pool = (colour, COLOURS) if kind == 0 else (shape, SHAPES)
        templates = (
            ("Is the object {}?", "Is this object {}?")
            if kind == 0
            else ("Is this a {}?", "Is the shape a {}?")
        )
    named = truth if rng.random() < 0.5 else pick(rng, [p for p in pool if p != truth])
    # one chart phrasing: drawing none keeps the corpus (and the base) as built
    template = templates[0] if len(templates) == 1 else pick(rng, templates)
    question = template.format(named)
    return pixels, _suffix(rng, question), "yes" if named == truth else "no"


def corner_question(rng: np.random.Generator, size: int) -> Example:
    """Colour or shape of the only object in a named corner of a scene."""
    alone: list[str] = []
    while not alone:  # redraw the rare scene without a lone object in a corner
        pixels, objects, cells = scene_picture(rng, size, 1, 5)
        by_corner: dict[str, list[tuple[str, str]]] = {}
        for cell, obj in zip(cells, objects, strict=True):
            by_corner.setdefault(quadrant(cell), []).append(obj)
        alone = sorted(c for c, found in by_corner.items() if len(found) == 1)
    corner = pick(rng, alone)
    colour, shape = by_corner[corner][0]
    if rng.random() < 0.5:
        question = f"What color is the object in the {corner} corner?"
        return pixels, _suffix(rng, question), colour
    question = f"What shape is in the {corner} corner?"
    return pixels, _suffix(rng, question), shape


def total_question(rng: np.random.Generator, size: int) -> Example:
    """How many objects (or bars) a picture holds, all kinds together."""
    if rng.random() < 0.7:
        pixels, objects, _ = scene_picture(rng, size, 1, 8)
        question, count = "How many objects are in the picture?", len(objects)
    else:
        count = int(rng.integers(1, 5))
        colours = pick_distinct(rng, COLOURS, count)
        heights = [int(h) for h in rng.integers(4, size - 3, size=count)]
        pixels = bar_chart(rng, size, colours, heights)
        question = "How many bars does the chart have?"
    return pixels, _suffix(rng, question), str(count)


def choice_question(rng: np.random.Generator, size: int) -> Example:
    """Multiple choice on the object's colour or shape; the answer is a letter."""
    pixels, shape, colour, _, _ = object_picture(rng, size)
    if rng.random() < 0.5:
        question, correct, pool = "What color is the object?", colour, COLOURS
    else:
        question, correct, pool = "What shape is the object?", shape, SHAPES
    options = [correct, *pick_distinct(rng, [p for p in pool if p != correct], 3)]
    shuffled = [options[int(i)] for i in rng.permutation(4)]
    lines = "\n".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(shuffled))
    letter = LETTERS[shuffled.index(correct)]
    return pixels, f"{question}\n{lines}\n{LETTER}", letter


def position_question(rng: np.random.Generator, size: int) -> Example:
    """Left or right, top or bottom: where the (small) object is."""
    shape, colour = pick(rng, SHAPES), pick(rng, COLOURS)
    pixels, box = single_object(rng, size, shape, colour, "small")
    centre_x, centre_y = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    if rng.random() < 0.5:
        question = f"Is the {shape} on the left or on the right?"
        answer = "left" if centre_x < size / 2 else "right"
    else:
        question = f"Is the {shape} at the top or at the bottom?"
        answer = "top" if centre_y < size / 2 else "bottom"
    return pixels, question, answer


def bar_question(rng: np.random.Generator, size: int) -> Example:
    """Charts: the colour of the leftmost or rightmost bar."""
    count = int(rng.integers(1, 5))
    colours = pick_distinct(rng, COLOURS, count)
    heights = [int(h) for h in rng.integers(4, size - 3, size=count)]
    pixels = bar_chart(rng, size, colours, heights)
    side = pick(rng, ("leftmost", "rightmost"))
    answer = colours[0] if side == "leftmost" else colours[-1]
    return pixels, _suffix(rng, f"What color is the {side} bar?"), answer


def number_question(rng: np.random.Generator, size: int) -> Example:
    """Which number a (handwritten or printed) digit shows, in words."""
    pixels, label, _ = digit_picture(rng, size)
    question = pick(
        rng,
        ("Which number is written in the picture?", "What number do you see?"),
    )
    return pixels, _suffix(rng, question), NUMBER_WORDS[label]


def reading_question(rng: np.random.Generator, size: int) -> Example:
    """Read a rendered word."""
    pixels, word, _ = word_picture(rng, size)
    question = pick(
        rng, ("What word is written in the picture?", "What does the text say?")
    )
    return pixels, _suffix(rng, question), word


def height_question(rng: np.random.Generator, size: int) -> Example:
    """How tall a named bar of a chart is, in five words."""
    pixels, colours, levels = chart_picture(rng, size)
    index = int(rng.integers(0, len(colours)))
    question = f"How tall is the {colours[index]} bar?"
    return pixels, _suffix(rng, question), HEIGHT_WORDS[levels[index]]


def locate_question(rng: np.random.Generator, size: int) -> Example:
    """In which corner a named object of a scene is."""
    pixels, objects, cells = scene_picture(rng, size, 1, 5)
    unique = [i for i, obj in enumerate(objects) if objects.count(obj) == 1]
    index = int(rng.choice(unique)) if unique else 0
    colour, shape = objects[index]
    question = f"Where is the {colour} {shape}?"
    return pixels, _suffix(rng, question), quadrant(cells[index])


def sum_question(rng: np.random.Generator, size: int) -> Example:
    """Text only: a sum or a difference of small numbers."""
    a, b = int(rng.integers(0, 10)), int(rng.integers(0, 10))
    if rng.random() < 0.5:
        return blank(rng, size), _suffix(rng, f"What is {a} plus {b}?"), str(a + b)
    a, b = max(a, b), min(a, b)
    return blank(rng, size), _suffix(rng, f"What is {a} minus {b}?"), str(a - b)


# ------------------------------------------------------------ stage 1: descriptions

DESCRIBE = ("Describe the image.", "What is in the picture?", "Describe what you see.")


def _describe_object(rng: np.random.Generator, size: int) -> tuple[np.ndarray, str]:
    pixels, shape, colour, scale, box = object_picture(rng, size)
    return pixels, f"a {scale} {colour} {shape} at the {side(box, size)}"


def _describe_scene(rng: np.random.Generator, size: int) -> tuple[np.ndarray, str]:
    pixels, objects, cells = scene_picture(rng, size)
    parts = [
        f"{c} {s} {quadrant(cell)}" for (c, s), cell in zip(objects, cells, strict=True)
    ]
    return pixels, f"{NUMBER_WORDS[len(objects)]} objects: " + ", ".join(parts)


def _describe_chart(rng: np.random.Generator, size: int) -> tuple[np.ndarray, str]:
    pixels, colours, levels = chart_picture(rng, size)
    parts = [f"{c} {HEIGHT_WORDS[lv]}" for c, lv in zip(colours, levels, strict=True)]
    return pixels, "bars from left to right: " + ", ".join(parts)


def _describe_digit(rng: np.random.Generator, size: int) -> tuple[np.ndarray, str]:
    pixels, label, handwritten = digit_picture(rng, size)
    kind = "handwritten" if handwritten else "printed"
    return pixels, f"the {kind} number {NUMBER_WORDS[label]}"


def _describe_text(rng: np.random.Generator, size: int) -> tuple[np.ndarray, str]:
    pixels, word, dark = word_picture(rng, size)
    return pixels, f"the word {word} in {'dark' if dark else 'light'} letters"


KINDS: tuple[
    tuple[float, Callable[[np.random.Generator, int], tuple[np.ndarray, str]]], ...
] = (
    (0.2, _describe_object),
    (0.25, _describe_scene),
    (0.15, _describe_chart),
    (0.2, _describe_digit),
    (0.2, _describe_text),
)


def description(rng: np.random.Generator, size: int) -> Example:
    """Stage 1: a generic request and a full description of the picture."""
    question = pick(rng, DESCRIBE)
    draw = float(rng.random())
    for share, describe in KINDS:
        if draw < share:
            pixels, text = describe(rng, size)
            return pixels, question, text
        draw -= share
    raise AssertionError("the shares of KINDS add up to 1")


# Stage 2's families, in turn; a fifth of stage 2 keeps describing (as LLaVA's
# instruction data keeps captions), so no kind of picture is forgotten.
FAMILIES: tuple[Callable[[np.random.Generator, int], Example], ...] = (
    colour_question,
    shape_question,
    exists_question,
    yes_no_question,
    corner_question,
    total_question,
    choice_question,
    position_question,
    bar_question,
    sum_question,
    number_question,
    reading_question,
    height_question,
    locate_question,
    description,
    description,
    description,
)


def alignment_corpus(count: int, *, seed: int, size: int) -> list[Example]:
    """Stage 1 data: ``count`` descriptions, deterministic in ``seed``."""
    rng = np.random.default_rng([seed, 2025, CORPUS_VERSION])
    return [description(rng, size) for _ in range(count)]


def pretraining_corpus(count: int, *, seed: int, size: int) -> list[Example]:
    """Stage 2 data: ``count`` examples, the families in turn."""
    rng = np.random.default_rng([seed, 2026, CORPUS_VERSION])
    return [FAMILIES[i % len(FAMILIES)](rng, size) for i in range(count)]


def base_corpus(
    *,
    seed: int,
    size: int,
    alignment: int = ALIGNMENT_EXAMPLES,
    instructions: int = CORPUS_EXAMPLES,
) -> tuple[list[Example], list[Example]]:
    """(stage 1, stage 2) data of the base."""
    return (
        alignment_corpus(alignment, seed=seed, size=size),
        pretraining_corpus(instructions, seed=seed, size=size),
    )


def pretraining_texts(*corpora: list[Example]) -> list[str]:
    """Every instruction and answer of ``corpora`` plus the word list."""
    examples = [e for corpus in corpora for e in corpus]
    return [*english_words(), *(q for _, q, _ in examples), *(a for *_, a in examples)]

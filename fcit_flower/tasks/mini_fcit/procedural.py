"""Procedurally drawn tasks: dots, quadrants, bar charts, captions, rendered words.

Every image is a function of a seeded numpy Generator, so the same seed gives the
same pixels.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from fcit_flower.tasks.mini_fcit.drawing import PALETTE, SHAPES, canvas, draw_shape

# An item: (image, {template field: value}, answer)
Item = tuple[Image.Image, dict[str, str], str]

QUADRANTS = ("top left", "top right", "bottom left", "bottom right")
WORDS = (
    "cat",
    "dog",
    "sun",
    "car",
    "box",
    "hat",
    "pen",
    "cup",
    "bus",
    "map",
    "egg",
    "key",
)


def dots(rng: np.random.Generator, size: int) -> tuple[Image.Image, int]:
    """1-9 black dots on distinct cells of a 5 x 5 grid; returns (image, count)."""
    count = int(rng.integers(1, 10))
    cell = size // 5
    cells = rng.choice(25, size=count, replace=False)
    image = canvas(size)
    draw = ImageDraw.Draw(image)
    for c in cells:
        cx, cy = (c % 5) * cell + cell // 2 + 1, (c // 5) * cell + cell // 2 + 1
        draw.ellipse((cx - 2, cy - 2, cx + 2, cy + 2), fill=(0, 0, 0))
    return image, count


def quadrant(rng: np.random.Generator, size: int) -> Item:
    """One coloured shape in one quadrant."""
    where = int(rng.integers(0, 4))
    half = size // 2
    side = half - 4
    x0 = (where % 2) * half + int(rng.integers(0, half - side + 1))
    y0 = (where // 2) * half + int(rng.integers(0, half - side + 1))
    image = canvas(size)
    colour = list(PALETTE)[int(rng.integers(0, len(PALETTE)))]
    shape = SHAPES[int(rng.integers(0, len(SHAPES)))]
    draw_shape(
        ImageDraw.Draw(image),
        shape,
        (x0, y0, x0 + side - 1, y0 + side - 1),
        PALETTE[colour],
    )
    return image, {"shape": shape, "colour": colour}, QUADRANTS[where]


def _bars(
    size: int, colours: list[str], heights: list[int], grid: bool = False
) -> Image.Image:
    image = canvas(size)
    draw = ImageDraw.Draw(image)
    if grid:
        for level in range(1, 6):
            y = size - 1 - level * (size - 4) // 5
            draw.line((0, y, size - 1, y), fill=(200, 200, 200))
    width = (size - 4) // len(colours) - 2
    for i, (colour, height) in enumerate(zip(colours, heights, strict=True)):
        x0 = 2 + i * (width + 2)
        draw.rectangle(
            (x0, size - 1 - height, x0 + width - 1, size - 1), fill=PALETTE[colour]
        )
    return image


def tallest_bar(rng: np.random.Generator, size: int) -> Item:
    """Three bars of distinct colours and heights; the answer is the tallest colour."""
    colours = [
        list(PALETTE)[int(i)] for i in rng.choice(len(PALETTE), 3, replace=False)
    ]
    heights = [int(h) for h in rng.choice(np.arange(5, size - 2, 3), 3, replace=False)]
    return _bars(size, colours, heights), {}, colours[int(np.argmax(heights))]


def compare_bars(rng: np.random.Generator, size: int) -> Item:
    """Two bars: is the first named one taller than the second."""
    colours = [
        list(PALETTE)[int(i)] for i in rng.choice(len(PALETTE), 2, replace=False)
    ]
    heights = [int(h) for h in rng.choice(np.arange(5, size - 2, 3), 2, replace=False)]
    first, second = (0, 1) if rng.random() < 0.5 else (1, 0)
    answer = "yes" if heights[first] > heights[second] else "no"
    tall, short = (0, 1) if heights[0] > heights[1] else (1, 0)
    fields = {
        "a": colours[first],
        "b": colours[second],
        "tall": colours[tall],
        "short": colours[short],
    }
    return _bars(size, colours, heights), fields, answer


def bar_value(rng: np.random.Generator, size: int) -> Item:
    """One bar of height 1-5 on a five-step grid."""
    value = int(rng.integers(1, 6))
    colour = list(PALETTE)[int(rng.integers(0, len(PALETTE)))]
    height = value * (size - 4) // 5
    image = _bars(size, [colour], [height], grid=True)
    return image, {}, str(value)


def caption(rng: np.random.Generator, size: int) -> Item:
    """One or two coloured shapes, captioned left to right."""
    count = int(rng.integers(1, 3))
    image = canvas(size)
    draw = ImageDraw.Draw(image)
    parts = []
    side = size // 2 - 4 if count == 2 else size // 2
    for i in range(count):
        colour = list(PALETTE)[int(rng.integers(0, len(PALETTE)))]
        shape = SHAPES[int(rng.integers(0, len(SHAPES)))]
        x0 = (size - side) // 2 if count == 1 else 2 + i * (size // 2)
        y0 = int(rng.integers(2, size - side - 1))
        draw_shape(draw, shape, (x0, y0, x0 + side - 1, y0 + side - 1), PALETTE[colour])
        parts.append(f"{'an' if colour[0] in 'aeiou' else 'a'} {colour} {shape}")
    return image, {}, " and ".join(parts)


def word(rng: np.random.Generator, size: int) -> Item:
    """A three-letter word rendered in black."""
    text = WORDS[int(rng.integers(0, len(WORDS)))]
    font = ImageFont.load_default(size=max(8, size * 7 // 16))
    image = canvas(size)
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    width, height = int(right - left), int(bottom - top)
    x = int(rng.integers(0, max(1, size - width))) - int(left)
    y = int(rng.integers(0, max(1, size - height))) - int(top)
    draw.text((x, y), text, fill=(0, 0, 0), font=font)
    return image, {}, text


GENERATORS: dict[str, Callable[[np.random.Generator, int], Item]] = {
    "grounding": quadrant,
    "arxivqa": tallest_bar,
    "figureqa": compare_bars,
    "dvqa": bar_value,
    "flickr30k": caption,
    "ocr-vqa": word,
}

# Paraphrases stay close in meaning: real institutions phrase one task alike, and
# DISCO's identity tokens (mean instruction features) must tell tasks apart.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "iconqa": (
        "How many dots are there?",
        "How many dots are in the image?",
        "How many dots can you see?",
    ),
    "clevr-math": (
        "Add one to the number of dots. What is the result?",
        "Add one to the dot count. What is the result?",
        "Adding one to the number of dots gives what result?",
    ),
    "grounding": (
        "Where is the {shape} located?",
        "Where is the {shape} in the image?",
        "Where in the image is the {shape}?",
    ),
    "arxivqa": (
        "Which color is the tallest bar?",
        "What is the color of the highest bar in the chart?",
        "Name the color of the tallest bar.",
    ),
    "figureqa": (
        "Is the {a} bar taller than the {b} bar?",
        "Is the {a} bar higher than the {b} bar?",
        "Is the {a} bar taller than the {b} one?",
    ),
    "dvqa": (
        "What is the value of the bar?",
        "What value does the bar show?",
        "What is the bar's value?",
    ),
    "flickr30k": (
        "Describe the image briefly.",
        "Describe this image in a few words.",
        "Briefly describe the image.",
    ),
    "ocr-vqa": (
        "What word is written in the image?",
        "Which word is written in the image?",
        "What word is shown in the image?",
    ),
    "imagenet-r": (
        "What digit is shown?",
        "What digit is shown in the image?",
        "Which digit is shown?",
    ),
    "tabmwp": (
        "Is the digit even or odd?",
        "Is the digit in the image even or odd?",
        "Is this digit even or odd?",
    ),
}

"""Drawing primitives of mini-FCIT's procedural images (PIL, deterministic).

Every picture is a function of a seeded ``numpy.random.Generator``: the same seed
gives the same pixels. Backgrounds, sizes and positions are drawn from wide ranges so
that two draws are almost never pixel-identical; the builder still removes the rare
duplicates by pixel hash (:mod:`fcit_flower.tasks.mini_fcit.pixels`).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Object colours. Backgrounds are light tints, so every colour stays visible.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "orange": (245, 140, 20),
    "yellow": (225, 205, 20),
    "green": (35, 155, 55),
    "teal": (20, 150, 150),
    "blue": (40, 70, 220),
    "purple": (140, 50, 180),
    "pink": (240, 110, 190),
    "brown": (125, 75, 35),
    "black": (20, 20, 20),
    "gray": (125, 125, 125),
}
COLOURS = tuple(PALETTE)
SHAPES = ("circle", "square", "triangle", "diamond", "cross")
PLURALS = {s: s + "es" if s == "cross" else s + "s" for s in SHAPES}
NUMBER_WORDS = (
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
)


def pick(rng: np.random.Generator, options: tuple[str, ...] | list[str]) -> str:
    """One element of ``options``."""
    return options[int(rng.integers(0, len(options)))]


def pick_distinct(
    rng: np.random.Generator, options: tuple[str, ...] | list[str], count: int
) -> list[str]:
    """``count`` distinct elements of ``options`` in random order."""
    return [options[int(i)] for i in rng.choice(len(options), count, replace=False)]


def background(rng: np.random.Generator, size: int) -> Image.Image:
    """A light, slightly tinted canvas (each channel in 215-255)."""
    tint = tuple(int(v) for v in rng.integers(215, 256, size=3))
    return Image.new("RGB", (size, size), tint)  # type: ignore[arg-type]


def draw_shape(
    draw: ImageDraw.ImageDraw,
    shape: str,
    box: tuple[int, int, int, int],
    fill: tuple[int, int, int],
) -> None:
    """Draw a filled ``shape`` inside ``box`` (x0, y0, x1, y1), edges included."""
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=fill)
    elif shape == "diamond":
        draw.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=fill)
    elif shape == "cross":
        arm = max(1, round((x1 - x0 + 1) / 3))
        draw.rectangle((x0, cy - arm / 2, x1, cy + arm / 2 - 1), fill=fill)
        draw.rectangle((cx - arm / 2, y0, cx + arm / 2 - 1, y1), fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}")


def to_array(image: Image.Image) -> np.ndarray:
    """``(H, W, 3)`` uint8 pixels of an RGB image."""
    return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()


# ---------------------------------------------------------------- single objects

GRID = 4  # a scene is a 4 x 4 grid of cells; at 32 px a cell is one image patch


@lru_cache(maxsize=4)
def _cell(size: int) -> int:
    return size // GRID


def single_object(
    rng: np.random.Generator, size: int, shape: str, colour: str, scale: str
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """One object on the canvas; ``scale`` is ``small`` or ``large``.

    Objects sit on the vision tower's patch grid (a small one inside one cell of
    the 4 x 4 grid, a large one inside a block of 2 x 2 or 3 x 3 cells), jittered
    within it, so every patch sees whole shapes rather than arbitrary slices.
    Returns the pixels and the object's box.
    """
    image = background(rng, size)
    cell = _cell(size)
    span = 1 if scale == "small" else int(rng.integers(2, 4))
    block = span * cell
    side = (
        int(rng.integers(block - 3, block + 1))
        if span == 1
        else int(rng.integers(block - cell // 2, block + 1))
    )
    col, row = (int(v) for v in rng.integers(0, GRID - span + 1, size=2))
    x0 = col * cell + int(rng.integers(0, block - side + 1))
    y0 = row * cell + int(rng.integers(0, block - side + 1))
    box = (x0, y0, x0 + side - 1, y0 + side - 1)
    draw_shape(ImageDraw.Draw(image), shape, box, PALETTE[colour])
    return to_array(image), box


RENDITIONS = ("filled", "outline", "striped", "dotted")


def _inner(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` whose four neighbours are in it too (one-pixel erosion)."""
    inner = np.zeros_like(mask)
    inner[1:-1, 1:-1] = (
        mask[1:-1, 1:-1]
        & mask[:-2, 1:-1]
        & mask[2:, 1:-1]
        & mask[1:-1, :-2]
        & mask[1:-1, 2:]
    )
    return inner


def rendition(
    rng: np.random.Generator, size: int, shape: str, colour: str
) -> np.ndarray:
    """One large ``shape`` in a random rendition style, with pixel noise.

    The style (:data:`RENDITIONS`) changes the object's appearance but not its
    class, as ImageNet-R's renditions (art, sketches, toys) do for its objects.
    """
    side = int(rng.integers(size // 2, size - 2))
    x0, y0 = (int(v) for v in rng.integers(0, size - side, size=2))
    mask_image = Image.new("L", (size, size), 0)
    draw_shape(
        ImageDraw.Draw(mask_image),
        shape,
        (x0, y0, x0 + side - 1, y0 + side - 1),
        255,  # type: ignore[arg-type]
    )
    mask = np.asarray(mask_image) > 0
    rows, cols = np.mgrid[0:size, 0:size]
    style = pick(rng, RENDITIONS)
    if style == "outline":
        mask &= ~_inner(_inner(mask))
    elif style == "striped":
        mask &= (rows // 2) % 2 == 0
    elif style == "dotted":
        mask &= (rows + cols) % 3 != 0
    pixels = to_array(background(rng, size)).astype(np.int16)
    pixels[mask] = PALETTE[colour]
    pixels += rng.integers(-12, 13, size=pixels.shape, dtype=np.int16)
    return np.clip(pixels, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- grid scenes


def scene(
    rng: np.random.Generator,
    size: int,
    objects: list[tuple[str, str]],
    cells: list[int] | None = None,
) -> tuple[np.ndarray, list[int]]:
    """Objects ``(colour, shape)`` on distinct cells of a 4 x 4 grid.

    Each object fills most of its cell, jittered by a pixel or two. Returns the
    pixels and the cell (row-major index) of each object.
    """
    if cells is None:
        cells = [int(c) for c in rng.choice(GRID * GRID, len(objects), replace=False)]
    cell = _cell(size)
    image = background(rng, size)
    draw = ImageDraw.Draw(image)
    for (colour, shape), index in zip(objects, cells, strict=True):
        side = int(rng.integers(cell - 3, cell))
        x0 = (index % GRID) * cell + int(rng.integers(0, cell - side + 1))
        y0 = (index // GRID) * cell + int(rng.integers(0, cell - side + 1))
        draw_shape(draw, shape, (x0, y0, x0 + side - 1, y0 + side - 1), PALETTE[colour])
    return to_array(image), cells


def cell_box(index: int) -> tuple[float, float, float, float]:
    """Normalised ``(x1, y1, x2, y2)`` of a grid cell."""
    step = 1.0 / GRID
    col, row = index % GRID, index // GRID
    return col * step, row * step, (col + 1) * step, (row + 1) * step


def format_box(box: tuple[float, float, float, float]) -> str:
    """``[0.25, 0.50, 0.50, 0.75]``: the reference's box format."""
    return "[" + ", ".join(f"{v:.2f}" for v in box) + "]"


# ---------------------------------------------------------------- bar charts


def bar_chart(
    rng: np.random.Generator,
    size: int,
    colours: list[str],
    heights: list[int],
    *,
    grid_levels: int = 0,
) -> np.ndarray:
    """Vertical bars of ``colours`` and pixel ``heights``, left to right.

    Bar widths and gaps vary per chart; ``grid_levels`` draws that many light
    horizontal gridlines (value axis) when positive.
    """
    image = background(rng, size)
    draw = ImageDraw.Draw(image)
    if grid_levels:
        for level in range(1, grid_levels + 1):
            y = size - 1 - level * (size - 2) // grid_levels
            draw.line((0, y, size - 1, y), fill=(185, 185, 185))
    count = len(colours)
    slot = (size - 2) // count
    width = int(rng.integers(max(2, slot // 2), slot))
    offset = int(rng.integers(0, slot - width + 1))
    for i, (colour, height) in enumerate(zip(colours, heights, strict=True)):
        x0 = 1 + i * slot + offset
        draw.rectangle(
            (x0, size - 1 - height, x0 + width - 1, size - 1), fill=PALETTE[colour]
        )
    return to_array(image)


def distinct_heights(
    rng: np.random.Generator, count: int, size: int, gap: int = 4
) -> list[int]:
    """``count`` bar heights on distinct levels ``gap`` pixels apart, in random order.

    Each is jittered upwards by less than ``gap - 2`` pixels, so two heights
    differ by at least 3 pixels (``gap`` >= 4).
    """
    levels = np.arange(4, size - 3, gap)
    chosen = rng.choice(levels, count, replace=False)
    jitter = rng.integers(0, max(1, gap - 2), size=count)
    return [int(h + j) for h, j in zip(chosen, jitter, strict=True)]


# ---------------------------------------------------------------- text


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def text_image(
    rng: np.random.Generator,
    size: int,
    text: str,
    *,
    fill: tuple[int, int, int],
    paper: tuple[int, int, int] | None = None,
    large: bool = False,
) -> np.ndarray:
    """``text`` rendered at a random size and position on a plain or tinted canvas.

    ``large``: a font of half to three quarters of the canvas (single characters).
    """
    image = (
        background(rng, size)
        if paper is None
        else Image.new("RGB", (size, size), paper)
    )
    draw = ImageDraw.Draw(image)
    low, high = (
        (size // 2, size * 3 // 4)
        if large
        else (max(8, size * 5 // 16), size * 7 // 16)
    )
    font_size = int(rng.integers(low, high + 1))
    font = _font(font_size)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    width, height = int(right - left), int(bottom - top)
    x = int(rng.integers(0, max(1, size - width))) - int(left)
    y = int(rng.integers(0, max(1, size - height))) - int(top)
    draw.text((x, y), text, fill=fill, font=font)
    return to_array(image)


def blank(rng: np.random.Generator, size: int) -> np.ndarray:
    """A plain light canvas (text-only instructions still carry an image)."""
    return to_array(background(rng, size))

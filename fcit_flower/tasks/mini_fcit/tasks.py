"""The 12 mini-FCIT tasks: what each one asks and its phrasings.

Each task stands in for one FCIT dataset (see :mod:`fcit_flower.tasks.catalog`) and
keeps that dataset's answer style: a word or number with the LLaVA short-answer
suffix, an option letter for multiple choice, a box for grounding, a caption for
Flickr30k. A task has several *train* phrasings per question type and a disjoint
set of *held-out* phrasings that only val and test items use, so a method cannot
route or answer by matching instruction strings it has seen. The items themselves
are drawn by :mod:`fcit_flower.tasks.mini_fcit.generators`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from fcit_flower.tasks.mini_fcit.drawing import COLOURS, SHAPES
from fcit_flower.tasks.mini_fcit.generators import (
    LETTER,
    LETTERS,
    SHORT,
    Item,
    aokvqa,
    arxivqa,
    clevr_math,
    dvqa,
    figureqa,
    flickr30k,
    grounding,
    iconqa,
    imagenet_r,
    ocr_vqa,
    super_clevr,
    tabmwp,
)


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
    answers : tuple of str
        The answer space when the generator draws answers uniformly from it (empty
        otherwise). Val and test items of such a task are balanced over it, so the
        majority-class rate of 50 items is the task's chance rate rather than a
        sampling accident (IconQA's most frequent answer was 30% of 50 items).
    """

    generate: Callable[[np.random.Generator, int, str], Item]
    phrasings: dict[str, Phrasings]
    chance: float
    answers: tuple[str, ...] = ()


def _options(question: str) -> str:
    return question + "\n{options}"


TASK_SPECS: dict[str, TaskSpec] = {
    "imagenet-r": TaskSpec(
        imagenet_r,
        {
            "object": Phrasings(
                (
                    "What object is shown in the image?",
                    "Which object does this picture show?",
                    "What is drawn here?",
                    "Identify the object in the image.",
                    "What kind of object is depicted?",
                ),
                (
                    "Tell me which object appears in this picture.",
                    "Name the object in this rendition.",
                    "What is this a drawing of?",
                ),
            )
        },
        chance=100 / len(SHAPES),
        answers=SHAPES,
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
        answers=tuple(str(n) for n in range(1, 7)),
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
        answers=tuple(LETTERS),
    ),
    "arxivqa": TaskSpec(
        arxivqa,
        {
            "extreme": Phrasings(
                (
                    "Which bar is the {extreme} in the chart?",
                    "Which color is the {extreme} bar?",
                    "In the chart, which bar is the {extreme}?",
                    "Identify the {extreme} bar in the figure.",
                    "What is the color of the {extreme} bar shown?",
                ),
                (
                    "Which bar in the figure reaches the {level} value?",
                    "Looking at the plot, which series has the {level} value?",
                    "According to the graph, which bar is at the {level} level?",
                ),
            )
        },
        chance=100 / len(COLOURS),
        answers=COLOURS,
    ),
    "figureqa": TaskSpec(
        figureqa,
        {
            "above-middle": Phrasings(
                (
                    "Is the tallest bar above the middle line?",
                    "Does the tallest bar cross the middle gridline?",
                    "Is the tallest bar higher than the middle gridline?",
                    "Does the tallest bar reach above the middle of the chart?",
                ),
                (
                    "Does the tallest bar extend past the middle line?",
                    "Is the tallest bar greater than the value at the middle gridline?",
                ),
            ),
        },
        chance=50.0,
        answers=("yes", "no"),
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
        answers=tuple(str(n) for n in range(1, 6)),
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
                    "Subtract every one of the {target}. How many objects are there now?",  # noqa: E501
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
                (
                    "Which color was used for the {shape}?",
                    "Tell me the {shape}'s color.",
                ),
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
            "title-colour": Phrasings(
                (
                    "What color is the title of this book?",
                    "In which color is the title printed?",
                    "What is the color of the text on this cover?",
                    "Which color is the book's title written in?",
                    "What color are the letters of the title?",
                ),
                (
                    "Tell me the color of the title on this cover.",
                    "The title of this book is printed in which color?",
                    "Which ink color was used for the book's title?",
                ),
            )
        },
        chance=100 / len(COLOURS),
        answers=COLOURS,
    ),
}


def instruction(
    spec: TaskSpec, kind: str, fields: dict[str, str], template: str
) -> str:
    """The full instruction: the filled template and the task's answer suffix."""
    text = template.format(**fields)
    suffix = spec.phrasings[kind].suffix
    return f"{text}\n{suffix}" if suffix else text

"""The mini-FCIT task table: 12 tasks mirroring the 12 FCIT datasets (pure data).

Each mini task stands in for one FCIT dataset and keeps its capability group, its
answer style and its metric; the data are real (easy-vqa, scikit-learn digits) or
procedurally drawn, small enough for a CPU. Real FCIT data use the same names via
:mod:`fcit_flower.tasks.fcit_data`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TaskInfo:
    """One task.

    Attributes
    ----------
    name : str
        Canonical (folder) name, e.g. ``imagenet-r``.
    fcit_name : str
        The FCIT dataset it mirrors.
    group : str
        Capability group: general, chart, math or other.
    metric : str
        Scorer name in :mod:`fcit_flower.tasks.metrics`.
    description : str
        What the mini task asks.
    """

    name: str
    fcit_name: str
    group: str
    metric: str
    description: str


TASKS: dict[str, TaskInfo] = {
    t.name: t
    for t in (
        TaskInfo(
            "aokvqa",
            "AOKVQA",
            "general",
            "exact",
            "easy-vqa yes/no questions on real easy-vqa images",
        ),
        TaskInfo("iconqa", "IconQA", "general", "exact", "count 1-9 drawn dots"),
        TaskInfo(
            "grounding",
            "Grounding",
            "general",
            "exact",
            "which quadrant holds the shape",
        ),
        TaskInfo(
            "imagenet-r",
            "ImageNet-R",
            "general",
            "exact",
            "classify a scikit-learn handwritten digit",
        ),
        TaskInfo(
            "arxivqa",
            "ArxivQA",
            "chart",
            "exact",
            "colour of the tallest of three bars",
        ),
        TaskInfo(
            "figureqa",
            "FigureQA",
            "chart",
            "substring",
            "is one coloured bar taller than another (yes/no)",
        ),
        TaskInfo(
            "dvqa", "DVQA", "chart", "substring", "value (1-5) of a bar on a grid"
        ),
        TaskInfo(
            "clevr-math",
            "CLEVR-Math",
            "math",
            "exact",
            "add one to the number of dots (the iconqa images)",
        ),
        TaskInfo(
            "super-clevr",
            "super-CLEVR",
            "math",
            "exact",
            "easy-vqa shape questions (the aokvqa image pool)",
        ),
        TaskInfo(
            "tabmwp",
            "TabMWP",
            "math",
            "exact",
            "parity of a digit (the imagenet-r images)",
        ),
        TaskInfo(
            "flickr30k",
            "Flickr30k",
            "other",
            "rouge-l",
            "caption one or two coloured shapes",
        ),
        TaskInfo(
            "ocr-vqa", "OCR-VQA", "other", "exact", "read a rendered three-letter word"
        ),
    )
}

# Task setting: the authors' evaluation order (FCIT-REFERENCE.md).
TASK_ORDER = [
    "imagenet-r",
    "arxivqa",
    "iconqa",
    "clevr-math",
    "ocr-vqa",
    "flickr30k",
    "figureqa",
    "super-clevr",
]

# Capability setting: one group per stage, in this order.
CAPABILITY_GROUPS: dict[str, list[str]] = {
    "general": ["aokvqa", "iconqa", "grounding", "imagenet-r"],
    "chart": ["arxivqa", "figureqa", "dvqa"],
    "math": ["clevr-math", "super-clevr", "tabmwp"],
    "other": ["flickr30k", "ocr-vqa"],
}


def get_task(name: str) -> TaskInfo:
    """The task called ``name``; ``ValueError`` naming the allowed names otherwise."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known tasks: {sorted(TASKS)}")
    return TASKS[name]

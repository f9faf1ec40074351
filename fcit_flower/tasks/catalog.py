"""The mini-FCIT task table: 12 tasks mirroring the 12 FCIT datasets (pure data).

Each mini task stands in for one FCIT dataset and keeps its capability group, its
answer style and its metric; the data are real (easy-vqa, scikit-learn digits) or
procedurally drawn, small enough for a CPU. The tasks are scaled-down stand-ins
named after the datasets they imitate, not those datasets. Real FCIT data use the
same names via :mod:`fcit_flower.tasks.fcit_data`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


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
    extra_metrics : tuple of str
        Further scores reported per stage (captioning: BLEU-4, METEOR, ROUGE-L,
        CIDEr-D); the accuracy matrix holds ``metric``.
    """

    name: str
    fcit_name: str
    group: str
    metric: str
    description: str
    extra_metrics: tuple[str, ...] = ()


TASKS: dict[str, TaskInfo] = {
    t.name: t
    for t in (
        TaskInfo(
            "aokvqa",
            "AOKVQA",
            "general",
            "choice",
            "multiple choice (letter) on the colour or shape in a real easy-vqa image",
        ),
        TaskInfo(
            "iconqa",
            "IconQA",
            "general",
            "choice",
            "count the icons of one shape among other icons",
        ),
        TaskInfo(
            "grounding",
            "Grounding",
            "general",
            "iou",
            "box [x1, y1, x2, y2] of the named object in a 4 x 4 grid scene",
        ),
        TaskInfo(
            "imagenet-r",
            "ImageNet-R",
            "general",
            "exact",
            "name the object (a shape) drawn in a random rendition style",
        ),
        TaskInfo(
            "arxivqa",
            "ArxivQA",
            "chart",
            "choice",
            "colour (a word) of the tallest or shortest of 2-3 bars",
        ),
        TaskInfo(
            "figureqa",
            "FigureQA",
            "chart",
            "substring",
            "yes/no: is a named bar above the middle gridline",
        ),
        TaskInfo(
            "dvqa",
            "DVQA",
            "chart",
            "substring",
            "value (1-5) of a named bar against five gridlines",
        ),
        TaskInfo(
            "clevr-math",
            "CLEVR-Math",
            "math",
            "exact",
            "remove every object of a colour or shape; how many are left",
        ),
        TaskInfo(
            "super-clevr",
            "super-CLEVR",
            "math",
            "exact",
            "colour of the named shape, or shape of the named colour, of 2-3 objects",
        ),
        TaskInfo(
            "tabmwp",
            "TabMWP",
            "math",
            "exact",
            "a pictured handwritten digit plus 1, 2 or 3",
        ),
        TaskInfo(
            "flickr30k",
            "Flickr30k",
            "other",
            "rouge-l",
            "brief caption of 1-3 objects in reading order",
            ("bleu-4", "meteor", "rouge-l", "cider"),
        ),
        TaskInfo(
            "ocr-vqa",
            "OCR-VQA",
            "other",
            "exact",
            "colour of the title printed on a book cover",
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


# The per-dataset metric table: FCIT dataset name -> (capability group, metric).
# ``choice`` parses option letters and falls back to exact match when the reference
# is not a letter; ``iou`` parses boxes and falls back to exact match when the
# reference has none (mini-FCIT's quadrant words).
METRIC_TABLE: dict[str, tuple[str, str]] = {
    t.fcit_name: (t.group, t.metric) for t in TASKS.values()
}
_BY_FCIT_NAME = {t.fcit_name.lower(): t.name for t in TASKS.values()}
TASK_FILE = "task.json"


def canonical_name(name: str) -> str:
    """Catalog name of ``name`` (``ImageNet-R`` -> ``imagenet-r``), else ``name``."""
    if name in TASKS:
        return name
    return _BY_FCIT_NAME.get(name.lower(), name)


def get_task(name: str, root: Path | None = None) -> TaskInfo:
    """The task called ``name`` (catalog or FCIT name).

    A dataset outside the catalog is allowed when ``<root>/<name>/task.json``
    declares it: ``{"metric": "exact", "group": "other"}`` (group optional).

    Raises
    ------
    ValueError
        Unknown task without a declaration, or a bad declaration.
    """
    canonical = canonical_name(name)
    if canonical in TASKS:
        return TASKS[canonical]
    declared = root / name / TASK_FILE if root is not None else None
    if declared is None or not declared.is_file():
        raise ValueError(
            f"unknown task {name!r}; known tasks: {sorted(TASKS)} (or declare its "
            f"metric in <data-root>/{name}/{TASK_FILE})"
        )
    return _declared_task(name, declared)


def _declared_task(name: str, path: Path) -> TaskInfo:
    from fcit_flower.tasks.metrics import METRICS

    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as error:  # not UTF-8, not JSON
        raise ValueError(f"{path}: not readable JSON ({error})") from None
    if not isinstance(values, dict) or "metric" not in values:
        raise ValueError(f"{path}: needs an object with a 'metric' field")
    metric = values["metric"]
    if metric not in METRICS:
        raise ValueError(
            f"{path}: metric={metric!r} is not allowed; choose one of {list(METRICS)}"
        )
    extra = values.get("extra-metrics", [])
    for other in extra:
        if other not in METRICS:
            raise ValueError(f"{path}: extra-metrics entry {other!r} is not a metric")
    return TaskInfo(
        name,
        name,
        str(values.get("group", "other")),
        metric,
        str(values.get("description", "user dataset")),
        tuple(extra),
    )

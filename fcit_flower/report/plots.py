"""Plots of a run or a comparison, as PNG files (matplotlib, Agg backend).

Each function takes plain data (lists, dicts), writes one PNG and returns its path;
none of them reads a results file, so they are easy to test.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from fcit_flower.similarity import cosine_matrix  # noqa: E402

DPI = 100


def _save(figure: Figure, path: Path) -> Path:
    """Write ``figure`` to ``path`` atomically (temp name + rename) and close it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    figure.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(figure)
    tmp.replace(path)
    return path


def _stage_by_task(matrix: Sequence[Sequence[float]], num_tasks: int) -> np.ndarray:
    """An accuracy matrix as a float array of one row per stage, one column per task."""
    return np.asarray(matrix, dtype=float).reshape(len(matrix), num_tasks)


def _annotated_heatmap(
    values: np.ndarray,
    *,
    rows: Sequence[str],
    columns: Sequence[str],
    title: str,
    xlabel: str,
    ylabel: str,
    colorbar: str,
    fmt: str,
    vmin: float,
    vmax: float,
    cmap: str = "viridis",
) -> Figure:
    """A heatmap with one annotation per cell; NaN cells stay blank."""
    height, width = values.shape
    figure, axes = plt.subplots(
        figsize=(max(4.0, 0.7 * width + 2.5), max(3.0, 0.45 * height + 1.8))
    )
    masked = np.ma.masked_invalid(values)
    image = axes.imshow(masked, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    axes.set_xticks(range(width), labels=list(columns), rotation=45, ha="right")
    axes.set_yticks(range(height), labels=list(rows))
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    span = vmax - vmin or 1.0
    if height * width <= 400:
        for i in range(height):
            for j in range(width):
                if np.isfinite(values[i, j]):
                    dark = (values[i, j] - vmin) / span < 0.6
                    axes.text(
                        j,
                        i,
                        format(values[i, j], fmt),
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if dark else "black",
                    )
    figure.colorbar(image, ax=axes, label=colorbar)
    return figure


def accuracy_heatmap(
    path: Path, tasks: Sequence[str], matrix: Sequence[Sequence[float]], title: str
) -> Path:
    """The accuracy matrix (stages x tasks), annotated with the scores.

    Parameters
    ----------
    path : Path
        PNG to write.
    tasks : Sequence[str]
        Column names.
    matrix : Sequence[Sequence[float]]
        One row per evaluated stage, scores in percent.
    title : str
        Figure title.

    Returns
    -------
    Path
        ``path``.
    """
    values = _stage_by_task(matrix, len(tasks))
    figure = _annotated_heatmap(
        values,
        rows=[f"after {s}" for s in range(1, len(matrix) + 1)],
        columns=tasks,
        title=title,
        xlabel="test task",
        ylabel="stage",
        colorbar="score (%)",
        fmt=".0f",
        vmin=0.0,
        vmax=100.0,
    )
    return _save(figure, path)


def forgetting_curves(
    path: Path,
    tasks: Sequence[str],
    matrix: Sequence[Sequence[float]],
    learned_at: Mapping[str, int],
    title: str,
) -> Path:
    """Each task's score over the stages; the stage a task is learned is marked.

    Parameters
    ----------
    path : Path
        PNG to write.
    tasks : Sequence[str]
        Tasks, in column order of ``matrix``.
    matrix : Sequence[Sequence[float]]
        One row per evaluated stage.
    learned_at : Mapping[str, int]
        Task -> 1-based stage after which it was first trained (missing: unseen).
    title : str
        Figure title.

    Returns
    -------
    Path
        ``path``.
    """
    values = _stage_by_task(matrix, len(tasks))
    stages = np.arange(1, len(matrix) + 1)
    figure, axes = plt.subplots(figsize=(7.5, 4.2))
    colors = plt.get_cmap("tab20")
    for j, task in enumerate(tasks):
        color = colors(j % 20)
        axes.plot(
            stages, values[:, j], marker="o", ms=3, lw=1.4, color=color, label=task
        )
        learned = learned_at.get(task)
        if learned is not None and 1 <= learned <= len(matrix):
            axes.plot(learned, values[learned - 1, j], marker="*", ms=11, color=color)
    axes.set_xlabel("after stage")
    axes.set_ylabel("score (%)")
    axes.set_ylim(-3, 103)
    axes.set_xticks(stages)
    axes.set_title(f"{title} (star: stage the task is learned)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, ncol=2, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _save(figure, path)


def ssa_heatmap(
    path: Path, activation: Mapping[str, Sequence[float]], title: str
) -> Path:
    """Mean Subspace Selective Activation weight per test task and subspace.

    Parameters
    ----------
    path : Path
        PNG to write.
    activation : Mapping[str, Sequence[float]]
        Test task -> mean SSA weight of each subspace.
    title : str
        Figure title.

    Returns
    -------
    Path
        ``path``.
    """
    tasks = list(activation)
    width = max(len(v) for v in activation.values())
    values = np.full((len(tasks), width), np.nan)
    for i, task in enumerate(tasks):
        values[i, : len(activation[task])] = activation[task]
    figure = _annotated_heatmap(
        values,
        rows=tasks,
        columns=[str(k) for k in range(width)],
        title=title,
        xlabel="subspace",
        ylabel="test task",
        colorbar="mean SSA weight",
        fmt=".2f",
        vmin=0.0,
        vmax=1.0,
        cmap="magma",
    )
    return _save(figure, path)


def token_similarity(
    path: Path,
    tokens: Sequence[Sequence[float]],
    labels: Sequence[str],
    title: str,
) -> Path:
    """Cosine similarity between identity tokens (e.g. one per DISCO subspace).

    Parameters
    ----------
    path : Path
        PNG to write.
    tokens : Sequence[Sequence[float]]
        One vector per row.
    labels : Sequence[str]
        One label per token.
    title : str
        Figure title.

    Returns
    -------
    Path
        ``path``.
    """
    similarity = np.clip(cosine_matrix(tokens), -1.0, 1.0)  # rounding above 1
    figure = _annotated_heatmap(
        similarity,
        rows=labels,
        columns=labels,
        title=title,
        xlabel="identity token",
        ylabel="identity token",
        colorbar="cosine similarity",
        fmt=".2f",
        vmin=-1.0 if similarity.min() < 0 else 0.0,
        vmax=1.0,
        cmap="coolwarm",
    )
    return _save(figure, path)


def compare_bars(
    path: Path,
    methods: Sequence[str],
    means: Mapping[str, Sequence[float]],
    stds: Mapping[str, Sequence[float]],
    title: str,
) -> Path:
    """Grouped bars of mean (+- std over seeds) metrics per method.

    Parameters
    ----------
    path : Path
        PNG to write.
    methods : Sequence[str]
        One bar group per method.
    means, stds : Mapping[str, Sequence[float]]
        Metric name (e.g. ``"Last"``) -> one value per method.
    title : str
        Figure title.

    Returns
    -------
    Path
        ``path``.
    """
    metrics = list(means)
    x = np.arange(len(methods))
    width = 0.8 / max(len(metrics), 1)
    figure, axes = plt.subplots(figsize=(max(4.5, 1.4 * len(methods) + 2), 3.8))
    for k, metric in enumerate(metrics):
        offset = (k - (len(metrics) - 1) / 2) * width
        bars = axes.bar(
            x + offset,
            means[metric],
            width,
            yerr=stds.get(metric),
            capsize=3,
            label=metric,
        )
        axes.bar_label(bars, fmt="%.1f", fontsize=8, padding=2)
    axes.set_xticks(x, labels=list(methods))
    axes.set_ylabel("score (%)")
    axes.set_ylim(0, 118)
    axes.set_title(title)
    axes.legend(loc="upper left", ncol=len(metrics))
    axes.grid(axis="y", alpha=0.3)
    return _save(figure, path)

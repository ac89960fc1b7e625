"""Pictures logged to MLflow with the reports: count matrices (confusion tables), bootstrap
distributions of a comparison's gap."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def plot_count_matrix(
    counts: np.ndarray, rows: Sequence[str], columns: Sequence[str], path: str | os.PathLike, title: str
) -> Path:
    """Render a (rows x columns) count table as a PNG, counts written in the cells (Agg canvas:
    no pyplot, no global backend); rows are gold, columns predicted."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    counts = np.asarray(counts)
    figure = Figure(figsize=(1.5 + 0.8 * len(columns), 1.0 + 0.7 * len(rows)))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    image = axes.imshow(counts, cmap="Blues")
    axes.set_xticks(range(len(columns)), columns, rotation=45, ha="right")
    axes.set_yticks(range(len(rows)), rows)
    axes.set_xlabel("predicted")
    axes.set_ylabel("gold")
    axes.set_title(title)
    threshold = counts.max() / 2 if counts.size and counts.max() > 0 else 0
    for i in range(counts.shape[0]):
        for j in range(counts.shape[1]):
            color = "white" if counts[i, j] > threshold else "black"
            axes.text(j, i, str(counts[i, j]), ha="center", va="center", color=color, fontsize=8)
    figure.colorbar(image, ax=axes)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=100)
    return path


def plot_bootstrap(
    resamples: np.ndarray, gap: float, low: float, high: float, path: str | os.PathLike, title: str, metric: str
) -> Path:
    """Histogram of a bootstrap distribution of a gap (in points), with the observed gap, the
    interval's ends and zero marked: how far the interval stays from "no difference"."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 3.6))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.hist(100 * np.asarray(resamples), bins=40, color="#9ecae1", edgecolor="white")
    axes.axvline(0.0, color="black", linewidth=1)
    axes.axvline(100 * gap, color="#08519c", linewidth=2, label=f"gap {100 * gap:+.1f}")
    for end in (low, high):
        axes.axvline(100 * end, color="#08519c", linestyle="--", linewidth=1)
    axes.plot([], [], color="#08519c", linestyle="--", label=f"95 % CI [{100 * low:+.1f}, {100 * high:+.1f}]")
    axes.set_xlabel(f"{metric} gap (points)")
    axes.set_ylabel("resamples")
    axes.set_title(title)
    axes.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=100)
    return path

"""Pictures logged to MLflow with the reports: count matrices (confusion tables)."""

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

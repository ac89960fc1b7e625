"""Scores of a classification evaluation, computed with scikit-learn: accuracy, macro F1
(the figure Korean leaderboards report for hate speech), per-class precision / recall /
F1 / support, the confusion matrix and its picture."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

from finetune.plots import plot_count_matrix


def classification_scores(gold: Sequence[int], pred: Sequence[int], labels: Sequence[str]) -> dict:
    """``accuracy``, ``macro_f1``, ``per_class`` {label: precision, recall, f1, support} and
    ``confusion`` (rows gold, columns predicted, in label order)."""
    ids = list(range(len(labels)))
    precision, recall, f1, support = precision_recall_fscore_support(gold, pred, labels=ids, zero_division=0)
    return {
        "accuracy": float(accuracy_score(gold, pred)),
        # Over every label, present or not, as the leaderboards average their classes.
        "macro_f1": float(f1_score(gold, pred, labels=ids, average="macro", zero_division=0)),
        "per_class": {
            label: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for label, p, r, f, s in zip(labels, precision, recall, f1, support, strict=True)
        },
        "confusion": confusion_matrix(gold, pred, labels=ids).tolist(),
    }


def format_classification_report(scores: dict) -> str:
    lines = [f"{'label':<16}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}"]
    for label, row in scores["per_class"].items():
        lines.append(
            f"{label:<16}{row['precision']:>10.4f}{row['recall']:>10.4f}{row['f1']:>10.4f}{row['support']:>10d}"
        )
    lines.append(f"{'accuracy':<16}{scores['accuracy']:>30.4f}")
    lines.append(f"{'macro f1':<16}{scores['macro_f1']:>30.4f}")
    return "\n".join(lines)


def plot_confusion_matrix(
    confusion: Sequence[Sequence[int]], labels: Sequence[str], path: str | os.PathLike, title: str
) -> Path:
    """Render the confusion matrix (rows gold, columns predicted) as a PNG."""
    return plot_count_matrix(np.asarray(confusion), labels, labels, path, title)

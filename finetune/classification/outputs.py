"""What a classification run leaves in its directory: the file names, and the writer of
every prediction (``eval_predictions.tsv``), which ``finetune.compare`` reads back.

Kept apart from the job (:mod:`finetune.classification.run`) so that readers of a run
directory do not import Lightning and MLflow to learn a file name.
"""

from __future__ import annotations

from pathlib import Path

REPORT_JSON, REPORT_TEXT = "classification_report.json", "classification_report.txt"
CONFUSION_PNG, PREDICTIONS_TSV = "confusion_matrix.png", "eval_predictions.tsv"
TEST_REPORT_JSON, TEST_PREDICTIONS_TSV, TEST_CONFUSION_PNG = (
    "test_report.json",
    "test_predictions.tsv",
    "test_confusion_matrix.png",
)


def write_predictions(path: Path, rows, labels, gold: list[int], pred: list[int], probabilities) -> Path:
    """Every prediction as TSV: row, text (and pair), gold, predicted, one probability column per label."""
    header = ["row", "text", "text_pair", "gold", "predicted", *(f"p_{label}" for label in labels)]
    lines = ["\t".join(header)]
    for r, g, p, probs in zip(rows, gold, pred, probabilities, strict=True):
        clean = [r.row, r.text, r.text_pair or "", labels[g], labels[p], *(f"{x:.4f}" for x in probs)]
        lines.append("\t".join(str(x).replace("\t", " ").replace("\n", " ") for x in clean))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path

"""A finetuning run's predictions, read back from its directory as what a macro F1 is made of.

Every task's macro F1 is a mean over classes of 2tp / (2tp + fp + fn) (0 where tp = 0):
over every label of a classification task (the figure the job reports,
``finetune.classification.metrics.classification_scores``: scikit-learn with all labels,
as the leaderboards average their classes), over the entity types that occur in gold or
predictions for KLUE NER (seqeval's strict macro F1). So a run reads back as
``counts[unit, class] = (tp, fp, fn)``, one unit per evaluation row or sentence: summed
over any resample of the units they give that resample's macro F1 exactly, which is what
:mod:`finetune.compare` bootstraps. Each run is checked to read back to the figure in its
own report, so a wrong gold file or a damaged predictions file is refused, not compared.

* classification runs: ``eval_predictions.tsv`` (gold and predicted label of each row)
  and ``classification_report.json`` (the label list);
* KLUE NER runs: ``eval_predictions.tsv`` holds predicted tags only, in KLUE's format;
  the gold tags are in the file the run scored, which ``ner_report.json`` names (runs
  from before that key need ``gold_file``). Sentences are matched by id and text, and
  scored on characters other than the space, as the job scores them.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from finetune.classification import outputs as classification_outputs
from finetune.ner import outputs as ner_outputs
from finetune.ner.klue_ner import KLUE_NER_LABELS, KlueFormatError, read_klue_ner
from finetune.ner.metrics import drop_whitespace, entity_counts

SPLITS = ("eval", "test")


class CompareError(ValueError):
    """Runs that cannot be read or compared; the message names the file and what to do."""


@dataclass(frozen=True)
class ScoredRun:
    run_dir: Path
    task: str  # "classification" or "KLUE NER"
    metric: str  # what the macro F1 is over, for printing
    source: str  # the scored file
    classes: list[str]  # labels, or entity types
    units: list[str]  # "file:line" of each row, or each sentence's id, in order
    counts: np.ndarray  # (units, classes, 3): tp, fp, fn of each class in each unit
    all_classes: bool  # macro F1 over every class (classification), or over those that occur (NER)

    def macro_f1(self, totals: np.ndarray | None = None) -> np.ndarray | float:
        """Macro F1 of summed counts (default: the whole file), as this task's job reports it."""
        return macro_f1(self.counts.sum(0) if totals is None else totals, self.all_classes)

    @property
    def unit_name(self) -> str:
        return "rows" if self.task == "classification" else "sentences"

    @property
    def gold_counts(self) -> np.ndarray:
        """(units, classes): gold occurrences (tp + fn), which runs of one file share."""
        return self.counts[..., 0] + self.counts[..., 2]


def macro_f1(totals: np.ndarray, all_classes: bool) -> np.ndarray | float:
    """Macro F1 from summed ``(..., classes, 3)`` counts. ``all_classes``: the mean over every
    class, one absent from gold and predictions scoring 0 (scikit-learn with ``labels=`` and
    ``zero_division=0``); otherwise over the classes that occur (tp + fp + fn > 0), as seqeval
    and scikit-learn without ``labels=`` average. A class that occurs with no true positive scores 0."""
    totals = np.asarray(totals, dtype=np.float64)
    tp, fp, fn = totals[..., 0], totals[..., 1], totals[..., 2]
    occurs = (tp + fp + fn) > 0
    f1 = np.divide(2 * tp, 2 * tp + fp + fn, out=np.zeros_like(tp), where=occurs)
    averaged = np.full(occurs.shape[:-1], occurs.shape[-1]) if all_classes else occurs.sum(-1)
    score = f1.sum(-1) / np.maximum(averaged, 1)
    return float(score) if np.ndim(score) == 0 else score


def classification_counts(gold: np.ndarray, pred: np.ndarray, n_labels: int) -> np.ndarray:
    """(rows, labels, 3) counts of single-label predictions (label ids)."""
    gold, pred = np.asarray(gold)[:, None], np.asarray(pred)[:, None]
    label = np.arange(n_labels)[None, :]
    tp = (gold == label) & (pred == label)
    fp = (pred == label) & (gold != label)
    fn = (gold == label) & (pred != label)
    return np.stack([tp, fp, fn], axis=-1).astype(np.int64)


def is_scored_run(path: str | Path) -> bool:
    """Whether ``path`` is a run directory of ``run_finetune.py`` (it holds a task's report)."""
    return any(
        (Path(path) / report).is_file() for report in (ner_outputs.REPORT_JSON, classification_outputs.REPORT_JSON)
    )


def read_scored_run(run_dir: str | Path, split: str = "eval", gold_file: str | Path | None = None) -> ScoredRun:
    """The run's predictions for its evaluation (or test) file, whichever task it finetuned,
    checked against the figure its report gives (the report says which task: see :func:`is_scored_run`)."""
    run_dir = Path(run_dir)
    if split not in SPLITS:
        raise CompareError(f"split must be one of {SPLITS}, got {split!r}")
    if (run_dir / ner_outputs.REPORT_JSON).is_file():
        run, report_path, key, reported = read_ner_run(run_dir, split, gold_file)
    elif (run_dir / classification_outputs.REPORT_JSON).is_file():
        if gold_file:
            raise CompareError(f"{run_dir}: --gold is for KLUE NER runs; a classification run's predictions hold gold")
        run, report_path, key, reported = read_classification_run(run_dir, split)
    else:
        raise CompareError(
            f"{run_dir}: neither {classification_outputs.REPORT_JSON} nor {ner_outputs.REPORT_JSON} found: "
            "pass the run_dir: that run_finetune.py printed"
        )
    if reported is not None and abs(run.macro_f1() - reported) > 1e-6:
        raise CompareError(
            f"{run_dir}: the predictions score {run.macro_f1():.6f} against {run.source}, its {report_path.name} "
            f"says {key}={reported:.6f}: the gold file is not the one the run scored (pass --gold <that file>) "
            "or the predictions file was changed"
        )
    if len(run.units) < 2:
        raise CompareError(f"{run.source}: {len(run.units)} {run.unit_name} scored: a bootstrap needs at least 2")
    return run


def _read_report(path: Path) -> dict:
    if not path.is_file():
        raise CompareError(f"{path}: not found: the run directory is incomplete (its job did not finish?)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CompareError(f"{path}: not a readable JSON report ({err}): the file is damaged") from None


def _prediction_file(run_dir: Path, split: str, eval_name: str, test_name: str) -> Path:
    path = run_dir / (eval_name if split == "eval" else test_name)
    if not path.is_file():
        what = "scored no test file (task.test_file)" if split == "test" else "wrote no predictions"
        raise CompareError(f"{path}: not found: the run {what}")
    return path


def read_classification_run(run_dir: Path, split: str = "eval") -> tuple[ScoredRun, Path, str, float | None]:
    """The run, and the report, key and value of the job's own figure for the same file."""
    report = run_dir / classification_outputs.REPORT_JSON
    eval_report = _read_report(report)
    labels = eval_report.get("labels")
    if not labels:
        raise CompareError(f"{report}: no 'labels' list: the file is damaged or from another program")
    predictions = _prediction_file(
        run_dir, split, classification_outputs.PREDICTIONS_TSV, classification_outputs.TEST_PREDICTIONS_TSV
    )
    index = {label: i for i, label in enumerate(labels)}
    rows, gold, pred = [], [], []
    with predictions.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        for line, record in enumerate(reader, start=2):
            try:
                gold.append(index[record["gold"]])
                pred.append(index[record["predicted"]])
            except KeyError as err:
                raise CompareError(
                    f"{predictions}:{line}: label {err.args[0]!r} is not among the run's labels {labels} "
                    f"({report}): the file is damaged or from another run"
                ) from None
            rows.append(record["row"])
    if not rows:
        raise CompareError(f"{predictions}: no predictions")
    source = rows[0].rsplit(":", 1)[0]
    counts = classification_counts(np.array(gold), np.array(pred), len(labels))
    run = ScoredRun(run_dir, "classification", "macro F1", source, list(labels), rows, counts, all_classes=True)
    report_path = report if split == "eval" else run_dir / classification_outputs.TEST_REPORT_JSON
    figures = eval_report if split == "eval" else _read_report(report_path)
    return run, report_path, "macro_f1", figures.get("macro_f1")


def entity_types(labels: list[str]) -> list[str]:
    """The entity types of a BIO tag set, in first-seen order (``B-PS``, ``I-PS`` -> ``PS``)."""
    return list(dict.fromkeys(tag.split("-", 1)[1] for tag in labels if "-" in tag))


def read_ner_run(
    run_dir: Path, split: str = "eval", gold_file: str | Path | None = None
) -> tuple[ScoredRun, Path, str, float | None]:
    """The run, and the report, key and value of the job's own figure for the same file."""
    report_path = run_dir / (ner_outputs.REPORT_JSON if split == "eval" else ner_outputs.TEST_REPORT_JSON)
    predictions = _prediction_file(run_dir, split, ner_outputs.PREDICTIONS_TSV, ner_outputs.TEST_PREDICTIONS_TSV)
    report = _read_report(report_path)
    labels = report.get(ner_outputs.LABELS_KEY) or list(KLUE_NER_LABELS)
    file_key = ner_outputs.EVAL_FILE_KEY if split == "eval" else ner_outputs.TEST_FILE_KEY
    named = gold_file or report.get(file_key)
    gold_path = Path(named).expanduser().resolve() if named else None
    if gold_path is None:
        raise CompareError(
            f"{report_path} does not name the file the run scored (a run from before '{file_key}' was "
            "recorded): pass --gold <the KLUE NER TSV it scored>"
        )
    if not gold_path.is_file():
        raise CompareError(f"{gold_path} (the gold file of {report_path}): not found: pass --gold <its new path>")
    try:
        predicted = read_klue_ner(predictions, labels)
        gold_sentences = read_klue_ner(gold_path, labels)
    except KlueFormatError as err:
        raise CompareError(str(err)) from None
    by_id = {}
    for sentence in gold_sentences:
        if sentence.id in by_id:
            raise CompareError(f"{gold_path}: sentence id {sentence.id!r} occurs twice: ids must name one sentence")
        by_id[sentence.id] = sentence
    gold_tags = []
    for sentence in predicted:
        match = by_id.get(sentence.id)
        if match is None or match.text != sentence.text:
            problem = "is not in" if match is None else "has another text in"
            raise CompareError(
                f"{predictions}: sentence {sentence.id!r} {problem} {gold_path}: the run scored another file; "
                "pass --gold <the file it scored>"
            )
        gold_tags.append(match.tags)
    if not predicted:
        raise CompareError(f"{predictions}: no sentences")
    texts = [s.text for s in predicted]
    types, counts = entity_counts(
        drop_whitespace(texts, gold_tags), drop_whitespace(texts, [s.tags for s in predicted]), entity_types(labels)
    )
    units = [s.id for s in predicted]
    run = ScoredRun(run_dir, "KLUE NER", "entity macro F1", str(gold_path), types, units, counts, all_classes=False)
    key = "entity_macro_f1" if split == "eval" else "test_entity_macro_f1"
    return run, report_path, key, report.get(key)

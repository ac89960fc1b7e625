"""KLUE NER metrics, computed the way KLUE's baseline computes them.

KLUE reports two numbers (``klue_baseline/metrics/functional.py``):

* entity-level macro F1: ``seqeval.metrics.f1_score(..., average="macro",
  mode="strict", scheme=IOB2)`` -- exact span and type, averaged over entity types;
* character-level macro F1: ``sklearn.metrics.f1_score(..., average="macro",
  labels=range(13), zero_division=1)`` over the flattened character tags, *all 13
  tags including O* (the baseline's docstring says "except O"; its code includes O).

Both are computed on characters with whitespace removed: the baseline drops the
``" "`` lines of the TSV before scoring (:func:`drop_whitespace`). Two deliberate
differences from the baseline, so that exactly the characters of the text are scored:

* it scores the flattened batch with one extra ``O`` for [CLS] and [SEP] per
  sentence; we score only characters of the text (this moves the O-class F1 a hair);
* it drops characters past ``max_seq_length`` from scoring; we predict every
  character (sliding windows, :mod:`finetune.ner.alignment`).

All scores are fractions in [0, 1]; KLUE's leaderboard shows them x100.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from seqeval.metrics import classification_report as seqeval_report
from seqeval.metrics import f1_score as seqeval_f1
from seqeval.scheme import IOB2, Entities
from sklearn.metrics import f1_score as sklearn_f1

from finetune.ner.klue_ner import ENTITY_TYPES, KLUE_NER_LABELS, entity_spans
from finetune.plots import plot_count_matrix

MISSED = "MISSED"
SPURIOUS = "SPURIOUS"


def drop_whitespace(texts: Sequence[str], tag_sequences: Sequence[Sequence[str]]) -> list[list[str]]:
    """Tags of the characters other than the space (the KLUE baseline drops ``" "`` only)."""
    if len(texts) != len(tag_sequences):
        raise ValueError(f"{len(texts)} texts but {len(tag_sequences)} tag sequences")
    kept = []
    for text, tags in zip(texts, tag_sequences, strict=True):
        if len(text) != len(tags):
            raise ValueError(f"a text of {len(text)} characters has {len(tags)} tags")
        kept.append([tag for char, tag in zip(text, tags, strict=True) if char != " "])
    return kept


def _check_pairs(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> None:
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold sequences but {len(pred)} predicted")
    for i, (g, p) in enumerate(zip(gold, pred, strict=True)):
        if len(g) != len(p):
            raise ValueError(f"sequence {i}: {len(g)} gold tags but {len(p)} predicted")


def entity_f1(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]], average: str = "macro") -> float:
    """Entity-level F1 (seqeval, strict IOB2); ``average`` is "macro" (KLUE's) or "micro".

    Types absent from both gold and prediction do not enter the macro average; a
    type with no correct span scores 0 (seqeval's ``zero_division`` default).
    """
    _check_pairs(gold, pred)
    if average not in ("macro", "micro"):
        raise ValueError(f"average must be 'macro' or 'micro', got {average!r}")
    gold, pred = [list(g) for g in gold], [list(p) for p in pred]
    return float(seqeval_f1(gold, pred, average=average, mode="strict", scheme=IOB2, zero_division=0))


def entity_counts(
    gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]], entity_types: Sequence[str] = ENTITY_TYPES
) -> tuple[list[str], np.ndarray]:
    """Per-sentence sufficient statistics of :func:`entity_f1`: ``(types, counts)`` with
    ``counts[i, t] = (tp, fp, fn)`` of type ``types[t]`` in sentence ``i``.

    Spans are seqeval's own in strict IOB2 mode, matched on (start, end, type) as its
    macro F1 matches them, so summing any multiset of sentences' counts and taking
    2tp / (2tp + fp + fn) per type that occurs gives seqeval's figure for those sentences:
    what a bootstrap over sentences needs without re-running seqeval per resample.
    """
    _check_pairs(gold, pred)
    gold_spans = Entities([list(g) for g in gold], IOB2).entities
    pred_spans = Entities([list(p) for p in pred], IOB2).entities
    types = list(entity_types)
    for entity in (e for sentence in (*gold_spans, *pred_spans) for e in sentence):
        if entity.tag not in types:
            types.append(entity.tag)
    counts = np.zeros((len(gold_spans), len(types), 3), dtype=np.int64)
    for i, (gold_sentence, pred_sentence) in enumerate(zip(gold_spans, pred_spans, strict=True)):
        true = {(e.start, e.end, e.tag) for e in gold_sentence}
        predicted = {(e.start, e.end, e.tag) for e in pred_sentence}
        for t, entity_type in enumerate(types):
            true_t = {span for span in true if span[2] == entity_type}
            pred_t = {span for span in predicted if span[2] == entity_type}
            tp = len(true_t & pred_t)
            counts[i, t] = (tp, len(pred_t) - tp, len(true_t) - tp)
    return types, counts


def char_macro_f1(
    gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]], labels: Sequence[str] = KLUE_NER_LABELS
) -> float:
    """Character-level macro F1 over every label in ``labels`` (O included); a label
    that is neither in gold nor predicted scores 1, as with KLUE's ``zero_division=True``."""
    _check_pairs(gold, pred)
    label2id = {label: i for i, label in enumerate(labels)}
    try:
        gold_ids = [label2id[t] for seq in gold for t in seq]
        pred_ids = [label2id[t] for seq in pred for t in seq]
    except KeyError as err:
        raise ValueError(f"tag {err.args[0]!r} is not one of the labels {list(labels)}") from None
    return float(sklearn_f1(gold_ids, pred_ids, labels=list(range(len(labels))), average="macro", zero_division=1))


def entity_report(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict[str, dict[str, float]]:
    """Per-type precision/recall/F1/support (plus micro/macro/weighted averages),
    from seqeval's ``classification_report(output_dict=True)`` in strict IOB2 mode."""
    _check_pairs(gold, pred)
    report = seqeval_report(
        [list(g) for g in gold],
        [list(p) for p in pred],
        mode="strict",
        scheme=IOB2,
        output_dict=True,
        zero_division=0,
    )
    return {name: {key: float(value) for key, value in row.items()} for name, row in report.items()}


@dataclass(frozen=True)
class EntityConfusion:
    """Counts of gold entity type (rows, plus SPURIOUS) vs predicted type (columns,
    plus MISSED) over spans matched by exact boundaries."""

    rows: list[str]
    columns: list[str]
    counts: np.ndarray  # (len(rows), len(columns)) int64

    def as_dict(self) -> dict[str, dict[str, int]]:
        return {
            row: {col: int(self.counts[i, j]) for j, col in enumerate(self.columns)} for i, row in enumerate(self.rows)
        }


def entity_confusion(
    gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]], entity_types: Sequence[str] = ENTITY_TYPES
) -> EntityConfusion:
    """Type confusion of entities whose boundaries were found exactly.

    A gold span with a predicted span of the same (start, end) counts in
    ``[gold type, predicted type]`` (the diagonal is correct, the rest are type
    errors); a gold span with no such prediction counts in ``[gold type, MISSED]``; a
    predicted span with no such gold span in ``[SPURIOUS, predicted type]``. A span
    with the right type but a wrong boundary thus shows as one MISSED and one SPURIOUS.
    """
    _check_pairs(gold, pred)
    types = list(entity_types)
    for seq in (*gold, *pred):
        for entity_type, _, _ in entity_spans(seq):
            if entity_type not in types:
                types.append(entity_type)
    rows, columns = [*types, SPURIOUS], [*types, MISSED]
    counts = np.zeros((len(rows), len(columns)), dtype=np.int64)
    for gold_tags, pred_tags in zip(gold, pred, strict=True):
        predicted = {(start, end): entity_type for entity_type, start, end in entity_spans(pred_tags)}
        matched = set()
        for entity_type, start, end in entity_spans(gold_tags):
            predicted_type = predicted.get((start, end))
            if predicted_type is None:
                counts[rows.index(entity_type), columns.index(MISSED)] += 1
            else:
                counts[rows.index(entity_type), columns.index(predicted_type)] += 1
                matched.add((start, end))
        for (start, end), entity_type in predicted.items():
            if (start, end) not in matched:
                counts[rows.index(SPURIOUS), columns.index(entity_type)] += 1
    return EntityConfusion(rows, columns, counts)


def plot_entity_confusion(
    confusion: EntityConfusion, path: str | os.PathLike, title: str = "KLUE NER entity confusion"
) -> Path:
    """Render the confusion table as a PNG."""
    return plot_count_matrix(confusion.counts, confusion.rows, confusion.columns, path, title)


def klue_ner_metrics(
    texts: Sequence[str],
    gold: Sequence[Sequence[str]],
    pred: Sequence[Sequence[str]],
    labels: Sequence[str] = KLUE_NER_LABELS,
) -> dict:
    """Everything for one evaluation, from per-character tags of whole sentences
    (whitespace included, as :func:`finetune.ner.klue_ner.read_klue_ner` returns them)."""
    gold_kept, pred_kept = drop_whitespace(texts, gold), drop_whitespace(texts, pred)
    return {
        "entity_macro_f1": entity_f1(gold_kept, pred_kept, "macro"),
        "entity_micro_f1": entity_f1(gold_kept, pred_kept, "micro"),
        "char_macro_f1": char_macro_f1(gold_kept, pred_kept, labels),
        "report": entity_report(gold_kept, pred_kept),
        "confusion": entity_confusion(gold_kept, pred_kept),
    }

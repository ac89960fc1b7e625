"""KLUE's metrics against seqeval and scikit-learn called directly, and against
numbers worked out by hand."""

import random
import warnings

import pytest
from seqeval.metrics import classification_report, f1_score
from seqeval.scheme import IOB2
from sklearn.metrics import f1_score as sklearn_f1

from finetune.ner.klue_ner import KLUE_NER_LABELS, read_klue_ner
from finetune.ner.metrics import (
    MISSED,
    SPURIOUS,
    char_macro_f1,
    drop_whitespace,
    entity_confusion,
    entity_f1,
    entity_report,
    klue_ner_metrics,
    plot_entity_confusion,
)
from tests.conftest import REPO_ROOT

SAMPLE_DEV = REPO_ROOT / "finetune" / "sample" / "klue-ner-sample-dev.tsv"

# PS: 2 gold, both found. LC: found with a wrong end. OG: missed.
GOLD = [["B-PS", "I-PS", "O", "B-PS", "O", "B-LC", "I-LC", "O", "B-OG"]]
PRED = [["B-PS", "I-PS", "O", "B-PS", "O", "B-LC", "O", "O", "O"]]


def test_entity_macro_differs_from_micro():
    macro, micro = entity_f1(GOLD, PRED, "macro"), entity_f1(GOLD, PRED, "micro")
    assert macro == pytest.approx(1 / 3)  # (PS 1 + LC 0 + OG 0) / 3
    precision, recall = 2 / 3, 2 / 4
    assert micro == pytest.approx(2 * precision * recall / (precision + recall))  # 4/7
    assert macro == pytest.approx(f1_score(GOLD, PRED, average="macro", mode="strict", scheme=IOB2))
    assert micro == pytest.approx(f1_score(GOLD, PRED, average="micro", mode="strict", scheme=IOB2))


def test_strict_mode_drops_an_i_without_b():
    gold = [["B-PS", "I-PS", "O"]]
    pred = [["I-PS", "I-PS", "O"]]  # lenient (conlleval) reading would accept this span
    assert entity_f1(gold, pred) == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # seqeval warns about the zero division
        assert entity_f1(gold, pred) == f1_score(gold, pred, average="macro", mode="strict", scheme=IOB2)


def test_char_macro_f1_includes_o():
    gold = [["B-PS", "I-PS", "O", "O"]]
    pred = [["B-PS", "O", "O", "O"]]
    # B-PS 1, I-PS 0, O: P 2/3 R 1 -> 0.8, and the 10 labels absent from both count 1
    # (KLUE's zero_division=True).
    with_o = (1 + 0 + 0.8 + 10) / 13
    without_o = (1 + 0 + 10) / 12
    assert char_macro_f1(gold, pred) == pytest.approx(with_o)
    assert char_macro_f1(gold, pred) != pytest.approx(without_o)
    ids = {label: i for i, label in enumerate(KLUE_NER_LABELS)}
    expected = sklearn_f1(
        [ids[t] for t in gold[0]], [ids[t] for t in pred[0]], labels=list(range(13)), average="macro", zero_division=1
    )
    assert char_macro_f1(gold, pred) == pytest.approx(expected)


def test_char_macro_f1_rejects_unknown_tags():
    with pytest.raises(ValueError, match="not one of the labels"):
        char_macro_f1([["B-PER"]], [["O"]])


def test_whitespace_is_dropped_before_scoring():
    texts = ["오후 8시 뉴스"]
    gold = [["B-TI", "I-TI", "I-TI", "I-TI", "I-TI", "O", "O", "O"]]
    pred = [["B-TI", "I-TI", "O", "I-TI", "I-TI", "O", "O", "O"]]  # the inner space missed
    assert entity_f1(gold, pred) == 0.0  # with the space, the entity is broken
    assert drop_whitespace(texts, pred) == [["B-TI", "I-TI", "I-TI", "I-TI", "O", "O"]]
    metrics = klue_ner_metrics(texts, gold, pred)
    assert metrics["entity_macro_f1"] == 1.0 and metrics["char_macro_f1"] == 1.0
    # Only the space, as the KLUE baseline (token == " "); other whitespace is a character.
    assert drop_whitespace(["a\u3000b"], [["O", "O", "O"]]) == [["O", "O", "O"]]


def test_same_as_klue_baseline_on_one_flattened_sequence():
    # KLUE's baseline scores all sentences as one sequence with [CLS]/[SEP] "O"s
    # between them; per-sentence scoring gives the same entity F1.
    sentences = read_klue_ner(SAMPLE_DEV)
    rng = random.Random(0)
    labels = KLUE_NER_LABELS
    gold = drop_whitespace([s.text for s in sentences], [s.tags for s in sentences])
    pred = [[t if rng.random() < 0.9 else rng.choice(labels) for t in seq] for seq in gold]
    flat_gold = [t for seq in gold for t in ["O", *seq, "O"]]
    flat_pred = [t for seq in pred for t in ["O", *seq, "O"]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        baseline = f1_score([flat_gold], [flat_pred], average="macro", mode="strict", scheme=IOB2)
    assert entity_f1(gold, pred) == pytest.approx(baseline)


def test_entity_report_matches_seqeval():
    report = entity_report(GOLD, PRED)
    expected = classification_report(GOLD, PRED, mode="strict", scheme=IOB2, output_dict=True, zero_division=0)
    assert set(report) == set(expected) >= {"PS", "LC", "OG", "micro avg", "macro avg"}
    assert report["PS"] == {"precision": 1.0, "recall": 1.0, "f1-score": 1.0, "support": 2.0}
    assert report["macro avg"]["f1-score"] == pytest.approx(entity_f1(GOLD, PRED, "macro"))


def test_entity_confusion():
    gold = [["B-PS", "I-PS", "O", "B-LC", "I-LC", "O", "B-OG", "O", "B-DT", "I-DT"]]
    pred = [["B-PS", "I-PS", "B-TI", "B-OG", "I-OG", "O", "O", "O", "B-DT", "O"]]
    confusion = entity_confusion(gold, pred).as_dict()
    assert confusion["PS"]["PS"] == 1  # right
    assert confusion["LC"]["OG"] == 1  # right span, wrong type
    assert confusion["OG"][MISSED] == 1  # not found
    assert confusion["DT"][MISSED] == 1 and confusion[SPURIOUS]["DT"] == 1  # wrong end
    assert confusion[SPURIOUS]["TI"] == 1  # invented
    assert sum(sum(row.values()) for row in confusion.values()) == 6


def test_confusion_png(tmp_path):
    sentences = read_klue_ner(SAMPLE_DEV)
    metrics = klue_ner_metrics([s.text for s in sentences], [s.tags for s in sentences], [s.tags for s in sentences])
    assert metrics["entity_macro_f1"] == metrics["entity_micro_f1"] == metrics["char_macro_f1"] == 1.0
    confusion = metrics["confusion"]
    assert confusion.counts[-1].sum() == 0 and confusion.counts[:, -1].sum() == 0
    path = plot_entity_confusion(confusion, tmp_path / "plots" / "confusion.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

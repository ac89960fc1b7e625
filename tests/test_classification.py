"""Sentence and pair classification: readers and their errors, label order, token types,
metrics against scikit-learn and a brute-force count, the export, and the whole job on
the bundled samples (hate speech, KLUE NLI, NSMC with its test file)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import torchmetrics
from sklearn.metrics import f1_score

from bert_lm.models.bert import BertConfig
from bert_lm.training.run_support import ConfigError
from finetune.classification.data import (
    ClassificationFormatError,
    LabelledText,
    encode_pairs,
    label_ids,
    label_order,
    read_labelled,
)
from finetune.classification.export import load_classification_export, save_classification_export
from finetune.classification.metrics import classification_scores
from finetune.classification.module import BertSequenceClassifier
from finetune.classification.run import (
    check_classification_config,
    class_weights_for,
    finetune_classification,
    hold_out,
)
from tests.conftest import REPO_ROOT
from tests.test_finetune_e2e import compose_config, tiny_overrides

SAMPLE = REPO_ROOT / "finetune" / "sample"


# --------------------------------------------------------------------------- readers
def test_hate_speech_tsv_reads_every_row_with_its_label():
    rows = read_labelled(SAMPLE / "hate-speech-sample-train.tsv", "comments", "hate")
    assert len(rows) == 53 and {r.label for r in rows} == {"none", "offensive", "hate"}
    assert rows[0].row.endswith("hate-speech-sample-train.tsv:2")  # line 1 is the header


def test_klue_nli_json_reads_pairs():
    rows = read_labelled(SAMPLE / "klue-nli-sample-dev.json", "premise", "gold_label", "hypothesis")
    assert all(r.text_pair for r in rows) and rows[0].row.endswith(":[0]")


@pytest.mark.parametrize(
    ("name", "content", "columns", "message"),
    [
        ("a.tsv", "text\tlabel\n좋다\tpos\n", ("comments", "label"), r"a.tsv:2: no column 'comments'"),
        ("b.tsv", "text\tlabel\n좋다\tpos\n  \tneg\n", ("text", "label"), r"b.tsv:3: empty 'text'"),
        ("c.jsonl", '{"text": "좋다", "label": "pos"}\n{"text": "싫다", "label": \n', ("text", "label"), r"c.jsonl:2: malformed JSON"),
        ("d.tsv", "text\tlabel\n좋다\n", ("text", "label"), r"d.tsv:2: fewer fields than the header"),
        ("e.csv", "text,label\n좋다,\n", ("text", "label"), r"e.csv:2: empty label"),
    ],
)
def test_bad_rows_are_reported_with_file_and_line(tmp_path, name, content, columns, message):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ClassificationFormatError, match=message):
        read_labelled(path, columns[0], columns[1])


def test_non_utf8_is_reported_with_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes('{"text": "좋다", "label": "a"}\n'.encode() + b'{"text": "\xff", "label": "b"}\n')
    with pytest.raises(ClassificationFormatError, match=r"bad.jsonl:2: not UTF-8"):
        read_labelled(path, "text", "label")


def test_labels_come_from_training_and_unknown_ones_name_the_row():
    train = [LabelledText("a", None, label, f"t:{i}") for i, label in enumerate(["neg", "pos", "neg"])]
    assert label_order(train, None) == ["neg", "pos"]
    assert label_order(train, ["pos", "neg"]) == ["pos", "neg"]  # a configured order is kept
    with pytest.raises(ClassificationFormatError, match=r"e:7: label 'meh' is not among the training labels"):
        label_ids([LabelledText("x", None, "meh", "e:7")], ["neg", "pos"])
    with pytest.raises(ClassificationFormatError, match=r"t:1: label 'pos' is not in task.labels"):
        label_order(train, ["neg"])


def test_hold_out_is_seeded_and_disjoint():
    rows = [LabelledText(str(i), None, "a", f"f:{i}") for i in range(50)]
    train, held = hold_out(rows, 0.2, seed=1)
    assert len(held) == 10 and not {r.row for r in train} & {r.row for r in held}
    assert hold_out(rows, 0.2, seed=1)[1] == held and hold_out(rows, 0.2, seed=2)[1] != held


def test_balanced_class_weights_follow_sklearn():
    from sklearn.utils.class_weight import compute_class_weight

    rows = [LabelledText("x", None, label, "") for label in ["a"] * 6 + ["b"] * 3 + ["c"]]
    expected = compute_class_weight("balanced", classes=np.array(["a", "b", "c"]), y=[r.label for r in rows])
    assert np.allclose(class_weights_for("balanced", rows, ["a", "b", "c"]), expected)


# ------------------------------------------------------------------------ encoding
def test_pairs_get_segment_ids_only_where_the_family_has_token_types(mecab_tokenizer):
    rows = [LabelledText("국가의 미래를 위하여", "우리는 노력한다", "entailment", "r")]
    with_types = encode_pairs(mecab_tokenizer, rows, 64, use_token_types=True)[0]
    without = encode_pairs(mecab_tokenizer, rows, 64, use_token_types=False)[0]
    ids = with_types["input_ids"]
    first_sep = ids.index(mecab_tokenizer.sep_id)
    assert ids[0] == mecab_tokenizer.cls_id and ids[-1] == mecab_tokenizer.sep_id
    assert with_types["token_type_ids"] == [0] * (first_sep + 1) + [1] * (len(ids) - first_sep - 1)
    assert without["token_type_ids"] == [0] * len(ids)  # RoBERTa: one token type


def test_pairs_are_truncated_longest_first(mecab_tokenizer):
    rows = [LabelledText("가 " * 40, "나 다", "x", "r")]
    example = encode_pairs(mecab_tokenizer, rows, 16, use_token_types=True)[0]
    assert len(example["input_ids"]) == 16
    assert example["token_type_ids"].count(1) == len(mecab_tokenizer.encode("나 다").ids) + 1  # the short one kept


# ------------------------------------------------------------------------- metrics
def test_scores_match_sklearn_torchmetrics_and_a_brute_force_count():
    gold = [0, 0, 1, 1, 2, 2, 2, 0]
    pred = [0, 1, 1, 1, 2, 0, 2, 2]
    scores = classification_scores(gold, pred, ["a", "b", "c"])
    # Brute force: per class precision/recall from counts.
    f1s = []
    for c in range(3):
        tp = sum(g == c and p == c for g, p in zip(gold, pred, strict=True))
        precision = tp / max(1, sum(p == c for p in pred))
        recall = tp / max(1, sum(g == c for g in gold))
        f1s.append(0.0 if tp == 0 else 2 * precision * recall / (precision + recall))
    assert scores["macro_f1"] == pytest.approx(sum(f1s) / 3)
    assert scores["macro_f1"] == pytest.approx(f1_score(gold, pred, average="macro"))
    assert scores["accuracy"] == pytest.approx(5 / 8)
    assert scores["confusion"][2] == [1, 0, 2]  # gold c: one predicted a, two c
    tm = torchmetrics.classification.MulticlassF1Score(3, average="macro")
    assert tm(torch.tensor(pred), torch.tensor(gold)).item() == pytest.approx(scores["macro_f1"], abs=1e-6)


# --------------------------------------------------------------------- pooling
def tiny_classifier(pooling: str) -> BertSequenceClassifier:
    config = BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=16)
    torch.manual_seed(0)
    return BertSequenceClassifier(config, ["a", "b", "c"], pooling=pooling).eval()


def test_mean_pooling_averages_the_text_tokens_and_ignores_padding():
    model = tiny_classifier("mean")
    ids = torch.tensor([[2, 7, 8, 9, 3], [2, 5, 3, 0, 0]])
    mask = (ids != 0).long()
    logits = model(ids, mask)
    tokens, _ = model.encoder(ids, None, mask)
    brute_force = torch.stack([tokens[row, : int(mask[row].sum())].mean(0) for row in range(2)])
    assert torch.allclose(logits, model.classifier(brute_force), atol=1e-6)
    # The short row alone, without padding, gets the same logits.
    assert torch.allclose(model(ids[1:, :3], mask[1:, :3]), logits[1:], atol=1e-5)
    # Same weights reading [CLS] instead: a different sentence vector.
    cls_model = tiny_classifier("cls")
    cls_model.load_state_dict(model.state_dict())
    assert not torch.allclose(cls_model(ids, mask), logits, atol=1e-3)


def test_the_export_keeps_the_pooling(tmp_path, mecab_tokenizer):
    model = tiny_classifier("mean")
    tokenizer_dir = mecab_tokenizer.save(tmp_path / "tokenizer")
    config = vars(model.config) | {"vocab_size": mecab_tokenizer.vocab_size}
    model = BertSequenceClassifier(BertConfig(**config), ["a", "b", "c"], pooling="mean").eval()
    save_classification_export(model, tokenizer_dir, tmp_path / "run" / "classification_export", max_len=16, pairs=False)
    predictor = load_classification_export(tmp_path / "run")
    assert predictor.classifier.pooling == "mean"
    with pytest.raises(ValueError, match="trained on single sentences"):
        predictor.probabilities(["정말 재미있었어요"], ["두 번째 문장"])
    # A pair model given one sentence is refused, not scored as if it were a pair.
    save_classification_export(model, tokenizer_dir, tmp_path / "pairs" / "classification_export", max_len=16, pairs=True)
    pair_predictor = load_classification_export(tmp_path / "pairs")
    with pytest.raises(ValueError, match="trained on sentence pairs: give the second text"):
        pair_predictor.probabilities(["정말 재미있었어요"])
    assert len(pair_predictor.probabilities(["정말 재미있었어요"], ["두 번째 문장"])[0]) == 3
    row = LabelledText("정말 재미있었어요", None, None, "")
    ids = torch.tensor([encode_pairs(predictor.tokenizer, [row], 16, False)[0]["input_ids"]])
    expected = model(ids, torch.ones_like(ids)).softmax(-1)[0]
    assert predictor.probabilities(["정말 재미있었어요"])[0] == pytest.approx(expected.tolist(), abs=1e-5)
    # A damaged pooling entry is named with the file, not met later as a shape error.
    model_file = tmp_path / "run" / "classification_export" / "classifier.pt"
    export = torch.load(model_file, weights_only=True)
    torch.save({**export, "pooling": "max"}, model_file)
    with pytest.raises(ValueError, match=r"classifier.pt: pooling='max': use one of"):
        load_classification_export(tmp_path / "run")


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["finetune.pooling=max"], "finetune.pooling='max': use one of"),
        (["finetune.pooling=mean", "finetune.pooler=true"], "finetune.pooler=true reads the \\[CLS\\] vector"),
        # the checks every finetuning job shares (finetune.job_setup.check_job_config)
        (["trainer.devices=2"], "finetuning evaluates in one process"),
        (["finetune.encoder_dropout=1.5"], "finetune.encoder_dropout=1.5"),
        (["finetune.init=pretrained"], "finetune.init=pretrained needs pretrained="),
        (["pretrained=/nonexistent/run"], "pretrained: /nonexistent/run does not exist"),
    ],
)
def test_bad_settings_fail_before_any_work(overrides, message):
    cfg = compose_config(["task=hate_speech", *overrides, "paths.output_dir=/tmp/unused"])
    with pytest.raises(ConfigError, match=message):
        check_classification_config(cfg)


# --------------------------------------------------------------------- whole job
def run_task(tmp_path, task, *extra):
    overrides = tiny_overrides(tmp_path, f"task={task}", "trainer.max_epochs=2", f"paths.output_dir={tmp_path / 'run'}", *extra)
    return finetune_classification(compose_config(overrides), overrides)


@pytest.mark.slow
def test_hate_speech_job_writes_report_picture_predictions_and_export(tmp_path):
    run_dir, scores = run_task(tmp_path, "hate_speech")
    report = json.loads((run_dir / "classification_report.json").read_text())
    assert report["labels"] == ["hate", "none", "offensive"]
    assert report["macro_f1"] == pytest.approx(scores["macro_f1"])
    assert (run_dir / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    predictions = (run_dir / "eval_predictions.tsv").read_text().splitlines()
    assert len(predictions) == 1 + 22 and predictions[0].startswith("row\ttext\ttext_pair\tgold\tpredicted\tp_hate")
    predictor = load_classification_export(run_dir)
    assert predictor.labels == report["labels"]  # label order survives save/load
    probabilities = predictor.probabilities(["정말 재미있었어요"])
    assert len(probabilities[0]) == 3 and sum(probabilities[0]) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.slow
def test_test_file_is_scored_once_with_the_selected_model(tmp_path):
    # The NSMC task scores its test file; mean pooling must survive into the export too.
    run_dir, scores = run_task(tmp_path, "nsmc", "finetune.pooling=mean")
    assert load_classification_export(run_dir).classifier.pooling == "mean"
    test_report = json.loads((run_dir / "test_report.json").read_text())
    assert test_report["macro_f1"] == pytest.approx(scores["test_macro_f1"])
    # Recomputed from the export: the figure comes from the selected, exported model.
    rows = read_labelled(SAMPLE / "nsmc-sample-test.txt", "document", "label")
    predicted = load_classification_export(run_dir).predict([r.text for r in rows])
    gold = [r.label for r in rows]
    assert f1_score(gold, predicted, average="macro", labels=["0", "1"]) == pytest.approx(scores["test_macro_f1"])
    assert "macro_f1" in scores and "accuracy" in scores


@pytest.mark.slow
def test_nli_cli_prints_macro_f1_then_accuracy_last(tmp_path):
    command = [sys.executable, "run_finetune.py", "task=klue_nli", "trainer.max_epochs=1",
               *tiny_overrides(tmp_path, f"hydra.run.dir={tmp_path / 'run'}")]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    last = result.stdout.strip().splitlines()[-2:]
    assert last[0].startswith("macro_f1: ") and last[1].startswith("accuracy: ")
    predict = subprocess.run(
        [sys.executable, "-m", "finetune.predict", str(tmp_path / "run"), "비가 온다.", "--pair", "날씨가 맑다."],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )
    assert predict.returncode == 0, predict.stderr
    label, text, pair, probabilities = predict.stdout.strip().split("\t")
    assert label in ("entailment", "neutral", "contradiction") and pair == "날씨가 맑다."
    assert "entailment=" in probabilities


def test_a_label_outside_training_stops_the_job_naming_the_row(tmp_path):
    bad_dev = tmp_path / "dev.tsv"
    bad_dev.write_text("comments\tcontain_gender_bias\tbias\thate\n좋아요\tFalse\tnone\tspam\n", encoding="utf-8")
    with pytest.raises(ClassificationFormatError, match=r"dev.tsv:2: label 'spam'"):
        run_task(tmp_path, "hate_speech", f"task.eval_file={bad_dev}")


def test_empty_texts_can_be_left_out_with_a_warning(tmp_path, caplog):
    path = tmp_path / "nsmc.txt"
    path.write_text("id\tdocument\tlabel\n1\t좋아요\t1\n2\t\t0\n3\t별로\t0\n", encoding="utf-8")
    with pytest.raises(ClassificationFormatError, match=r"nsmc.txt:3: empty 'document'"):
        read_labelled(path, "document", "label")
    rows = read_labelled(path, "document", "label", skip_empty_text=True)
    assert [r.text for r in rows] == ["좋아요", "별로"]
    assert "1 rows with an empty text left out (first: " in caplog.text

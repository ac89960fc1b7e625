"""finetune.compare: the macro-F1 gap between classification runs and its paired-bootstrap
interval, checked against scikit-learn and against an exhaustive enumeration of every
resample of a tiny file; runs that cannot be compared are refused naming the file."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
import torchmetrics
from sklearn.metrics import f1_score

from finetune import compare as compare_cli
from finetune.classification.data import LabelledText
from finetune.classification.outputs import write_predictions
from finetune.compare import CompareError, compare, macro_f1, read_run

LABELS = ["hate", "none", "offensive"]


def write_run(run_dir, gold, pred, eval_file="dev.tsv", labels=LABELS):
    """A classification run directory as run_finetune.py leaves it (report + predictions)."""
    run_dir.mkdir(parents=True)
    rows = [LabelledText(f"text {i}", None, labels[g], f"{eval_file}:{i + 2}") for i, g in enumerate(gold)]
    probabilities = [[1.0 if j == p else 0.0 for j in range(len(labels))] for p in pred]
    write_predictions(run_dir / "eval_predictions.tsv", rows, labels, list(gold), list(pred), probabilities)
    # The job's own figure comes from torchmetrics (ClassificationModule.val_macro_f1).
    metric = torchmetrics.classification.MulticlassF1Score(len(labels), average="macro")
    macro = float(metric(torch.tensor(pred), torch.tensor(gold)))
    (run_dir / "classification_report.json").write_text(json.dumps({"macro_f1": macro, "labels": labels}))
    return run_dir


def random_runs(tmp_path, n=200, seed=0):
    rng = np.random.default_rng(seed)
    gold = rng.integers(0, 3, n)
    good = np.where(rng.random(n) < 0.8, gold, rng.integers(0, 3, n))  # about 85 % right
    weak = np.where(rng.random(n) < 0.4, gold, rng.integers(0, 3, n))  # about 60 % right
    return gold, write_run(tmp_path / "good", gold, good), write_run(tmp_path / "weak", gold, weak)


def test_gap_is_sklearns_difference_and_a_clear_winner_has_an_interval_above_zero(tmp_path):
    gold, good_dir, weak_dir = random_runs(tmp_path)
    good, weak = read_run(good_dir), read_run(weak_dir)
    result = compare([good], [weak], n_resamples=100)
    expected = f1_score(gold, good.pred, average="macro") - f1_score(gold, weak.pred, average="macro")
    assert result.mean_gap == pytest.approx(expected)
    # compare's macro F1 is the job's (torchmetrics) figure, read back from the predictions file.
    report = json.loads((good_dir / "classification_report.json").read_text())
    assert macro_f1(good.gold, good.pred) == pytest.approx(report["macro_f1"], abs=1e-6)
    assert 0 < result.low < result.mean_gap < result.high
    assert result.not_ahead == 0.0
    reverse = compare([weak], [good], n_resamples=100)
    assert reverse.mean_gap == pytest.approx(-expected) and reverse.high < 0 and reverse.not_ahead == 1.0


def test_a_label_nobody_uses_is_left_out_as_the_jobs_torchmetrics_figure_does(tmp_path):
    gold, pred = np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1])  # label 2 in neither
    run = read_run(write_run(tmp_path / "run", gold, pred))
    report = json.loads((tmp_path / "run" / "classification_report.json").read_text())
    assert macro_f1(run.gold, run.pred) == pytest.approx(report["macro_f1"], abs=1e-6)
    assert report["macro_f1"] == pytest.approx(f1_score(gold, pred, labels=[0, 1], average="macro"), abs=1e-6)


def test_resamples_are_paired_identical_runs_differ_by_exactly_zero(tmp_path):
    # Unpaired resampling (each run its own rows) would give a spread around 0; paired gives 0 every time.
    gold, good_dir, _ = random_runs(tmp_path)
    twin = write_run(tmp_path / "twin", gold, read_run(good_dir).pred)
    result = compare([read_run(good_dir)], [read_run(twin)], n_resamples=100)
    assert np.all(result.resamples == 0.0) and result.low == result.high == 0.0


def test_bootstrap_distribution_matches_exhaustive_enumeration_on_a_tiny_file(tmp_path):
    """Four rows have 4**4 equally likely resamples: their exact mean and spread of the gap."""
    gold = np.array([0, 1, 2, 1])
    a = np.array([0, 1, 2, 0])
    b = np.array([0, 2, 2, 1])

    def gap(idx):
        f = lambda pred: f1_score(gold[idx], pred[idx], average="macro", zero_division=0)  # noqa: E731
        return f(a) - f(b)

    exact = np.array([gap(list(idx)) for idx in itertools.product(range(4), repeat=4)])
    result = compare(
        [read_run(write_run(tmp_path / "a", gold, a))], [read_run(write_run(tmp_path / "b", gold, b))], n_resamples=1500
    )
    assert result.resamples.mean() == pytest.approx(exact.mean(), abs=0.02)
    assert result.resamples.std() == pytest.approx(exact.std(), rel=0.1)
    assert result.mean_gap == pytest.approx(gap(list(range(4))))


def test_pairs_average_and_the_seed_fixes_the_interval(tmp_path):
    gold, good_dir, weak_dir = random_runs(tmp_path)
    good, weak = read_run(good_dir), read_run(weak_dir)
    result = compare([good, weak], [weak, weak], n_resamples=50, seed=3)
    assert result.pair_gaps[1] == 0.0 and result.mean_gap == pytest.approx(result.pair_gaps[0] / 2)
    again = compare([good, weak], [weak, weak], n_resamples=50, seed=3)
    assert (again.low, again.high) == (result.low, result.high)


def test_runs_that_cannot_be_compared_are_refused_naming_the_file(tmp_path):
    gold, good_dir, _ = random_runs(tmp_path)
    other_file = write_run(tmp_path / "other", gold, gold, eval_file="test.tsv")
    with pytest.raises(CompareError, match="scored different rows .*same file"):
        compare([read_run(good_dir)], [read_run(other_file)])
    with pytest.raises(CompareError, match="1 runs against 2"):
        compare([read_run(good_dir)], [read_run(good_dir), read_run(other_file)])
    ner = tmp_path / "ner"
    ner.mkdir()
    (ner / "ner_report.json").write_text("{}")
    with pytest.raises(CompareError, match=r"classification_report.json: not found \(a KLUE NER run"):
        read_run(ner)
    with pytest.raises(CompareError, match=r"test_predictions.tsv: not found: the run scored no test file"):
        read_run(good_dir, split="test")
    damaged = tmp_path / "damaged"
    write_run(damaged, gold[:3], gold[:3])
    lines = (damaged / "eval_predictions.tsv").read_text().splitlines()
    lines[2] = (
        lines[2].replace("\thate\t", "\tspam\t").replace("\tnone\t", "\tspam\t").replace("\toffensive\t", "\tspam\t")
    )
    (damaged / "eval_predictions.tsv").write_text("\n".join(lines) + "\n")
    with pytest.raises(CompareError, match=r"eval_predictions.tsv:3: label 'spam' is not among the run's labels"):
        read_run(damaged)


def test_cli_prints_pairs_interval_and_the_gap_last(tmp_path, capsys):
    gold, good_dir, weak_dir = random_runs(tmp_path)
    assert compare_cli.main([str(good_dir), "--against", str(weak_dir), "--resamples", "100"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].startswith("200 rows of dev.tsv, 100 paired resamples")
    assert "95 % CI [" in out[-3]
    expected = f1_score(gold, read_run(good_dir).pred, average="macro") - f1_score(
        gold, read_run(weak_dir).pred, average="macro"
    )
    assert out[-1] == f"macro_f1_gap: {expected:.4f}"
    assert compare_cli.main([str(tmp_path / "missing"), "--against", str(weak_dir)]) == 1
    assert "missing/classification_report.json: not found" in capsys.readouterr().err

"""finetune.compare: the macro-F1 gap between finetuning runs (classification and KLUE NER)
and its paired-bootstrap interval, checked against scikit-learn, seqeval and an exhaustive
enumeration of every resample of a tiny file; runs that cannot be compared are refused
naming the file."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
import torchmetrics
from mlflow.tracking import MlflowClient
from sklearn.metrics import f1_score

from finetune import compare as compare_cli
from finetune.classification.data import LabelledText
from finetune.classification.metrics import classification_scores
from finetune.classification.outputs import write_predictions
from finetune.compare import CompareError, compare
from finetune.ner.klue_ner import NerSentence, format_klue_ner, read_klue_ner
from finetune.ner.metrics import entity_counts, entity_f1, klue_ner_metrics
from finetune.scored_runs import macro_f1, read_scored_run

LABELS = ["hate", "none", "offensive"]


def write_run(run_dir, gold, pred, eval_file="dev.tsv", labels=LABELS):
    """A classification run directory as run_finetune.py leaves it (report + predictions)."""
    run_dir.mkdir(parents=True)
    rows = [LabelledText(f"text {i}", None, labels[g], f"{eval_file}:{i + 2}") for i, g in enumerate(gold)]
    probabilities = [[1.0 if j == p else 0.0 for j in range(len(labels))] for p in pred]
    write_predictions(run_dir / "eval_predictions.tsv", rows, labels, list(gold), list(pred), probabilities)
    # The report's figure, as the job computes it (finetune.classification.run.write_report).
    scores = classification_scores(list(gold), list(pred), labels)
    (run_dir / "classification_report.json").write_text(json.dumps({**scores, "labels": labels}))
    return run_dir


def gold_and_pred(run):
    """Label ids back from a classification run's counts: each row has one gold and one predicted label."""
    tp, fp, fn = run.counts[..., 0], run.counts[..., 1], run.counts[..., 2]
    return (tp + fn).argmax(1), (tp + fp).argmax(1)


def random_runs(tmp_path, n=200, seed=0):
    rng = np.random.default_rng(seed)
    gold = rng.integers(0, 3, n)
    good = np.where(rng.random(n) < 0.8, gold, rng.integers(0, 3, n))  # about 85 % right
    weak = np.where(rng.random(n) < 0.4, gold, rng.integers(0, 3, n))  # about 60 % right
    return gold, write_run(tmp_path / "good", gold, good), write_run(tmp_path / "weak", gold, weak)


def test_gap_is_sklearns_difference_and_a_clear_winner_has_an_interval_above_zero(tmp_path):
    gold, good_dir, weak_dir = random_runs(tmp_path)
    good, weak = read_scored_run(good_dir), read_scored_run(weak_dir)
    result = compare([good], [weak], n_resamples=100)
    expected = f1_score(gold, gold_and_pred(good)[1], average="macro") - f1_score(
        gold, gold_and_pred(weak)[1], average="macro"
    )
    assert result.mean_gap == pytest.approx(expected)
    # compare's macro F1 is the job's (torchmetrics) figure, read back from the predictions file.
    report = json.loads((good_dir / "classification_report.json").read_text())
    assert good.macro_f1() == pytest.approx(report["macro_f1"], abs=1e-9)
    assert np.array_equal(gold_and_pred(good)[0], gold)
    assert 0 < result.low < result.mean_gap < result.high
    assert result.not_ahead == 0.0
    reverse = compare([weak], [good], n_resamples=100)
    assert reverse.mean_gap == pytest.approx(-expected) and reverse.high < 0 and reverse.not_ahead == 1.0


def test_a_label_nobody_uses_scores_0_as_in_the_jobs_report(tmp_path):
    """The report averages over every label (as leaderboards do); torchmetrics' val/macro_f1 leaves an
    unused label out. compare takes the report's figure, the one the job prints and a user compares."""
    gold, pred = np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1])  # label 2 in neither
    run = read_scored_run(write_run(tmp_path / "run", gold, pred))
    report = json.loads((tmp_path / "run" / "classification_report.json").read_text())
    assert run.macro_f1() == pytest.approx(report["macro_f1"], abs=1e-9)
    assert run.macro_f1() == pytest.approx(f1_score(gold, pred, labels=[0, 1, 2], average="macro", zero_division=0))
    torchmetrics_figure = torchmetrics.classification.MulticlassF1Score(3, average="macro")(
        torch.tensor(pred), torch.tensor(gold)
    )
    assert run.macro_f1() == pytest.approx(float(torchmetrics_figure) * 2 / 3, abs=1e-6)


def test_resamples_are_paired_identical_runs_differ_by_exactly_zero(tmp_path):
    # Unpaired resampling (each run its own rows) would give a spread around 0; paired gives 0 every time.
    gold, good_dir, _ = random_runs(tmp_path)
    twin = write_run(tmp_path / "twin", gold, gold_and_pred(read_scored_run(good_dir))[1])
    result = compare([read_scored_run(good_dir)], [read_scored_run(twin)], n_resamples=100)
    assert np.all(result.resamples == 0.0) and result.low == result.high == 0.0


def test_bootstrap_distribution_matches_exhaustive_enumeration_on_a_tiny_file(tmp_path):
    """Four rows have 4**4 equally likely resamples: their exact mean and spread of the gap."""
    gold = np.array([0, 1, 2, 1])
    a = np.array([0, 1, 2, 0])
    b = np.array([0, 2, 2, 1])

    def gap(idx):
        f = lambda pred: f1_score(gold[idx], pred[idx], labels=[0, 1, 2], average="macro", zero_division=0)  # noqa: E731
        return f(a) - f(b)

    exact = np.array([gap(list(idx)) for idx in itertools.product(range(4), repeat=4)])
    result = compare(
        [read_scored_run(write_run(tmp_path / "a", gold, a))],
        [read_scored_run(write_run(tmp_path / "b", gold, b))],
        n_resamples=1500,
    )
    assert result.resamples.mean() == pytest.approx(exact.mean(), abs=0.02)
    assert result.resamples.std() == pytest.approx(exact.std(), rel=0.1)
    assert result.mean_gap == pytest.approx(gap(list(range(4))))


def test_pairs_average_and_the_seed_fixes_the_interval(tmp_path):
    gold, good_dir, weak_dir = random_runs(tmp_path)
    good, weak = read_scored_run(good_dir), read_scored_run(weak_dir)
    result = compare([good, weak], [weak, weak], n_resamples=50, seed=3)
    assert result.pair_gaps[1] == 0.0 and result.mean_gap == pytest.approx(result.pair_gaps[0] / 2)
    again = compare([good, weak], [weak, weak], n_resamples=50, seed=3)
    assert (again.low, again.high) == (result.low, result.high)


def test_runs_that_cannot_be_compared_are_refused_naming_the_file(tmp_path):
    gold, good_dir, _ = random_runs(tmp_path)
    other_file = write_run(tmp_path / "other", gold, gold, eval_file="test.tsv")
    with pytest.raises(CompareError, match="scored different rows .*same file"):
        compare([read_scored_run(good_dir)], [read_scored_run(other_file)])
    with pytest.raises(CompareError, match="1 runs against 2"):
        compare([read_scored_run(good_dir)], [read_scored_run(good_dir), read_scored_run(other_file)])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CompareError, match=r"empty: neither classification_report.json nor ner_report.json"):
        read_scored_run(empty)
    with pytest.raises(CompareError, match=r"test_predictions.tsv: not found: the run scored no test file"):
        read_scored_run(good_dir, split="test")
    damaged = tmp_path / "damaged"
    write_run(damaged, gold[:3], gold[:3])
    lines = (damaged / "eval_predictions.tsv").read_text().splitlines()
    lines[2] = (
        lines[2].replace("\thate\t", "\tspam\t").replace("\tnone\t", "\tspam\t").replace("\toffensive\t", "\tspam\t")
    )
    (damaged / "eval_predictions.tsv").write_text("\n".join(lines) + "\n")
    with pytest.raises(CompareError, match=r"eval_predictions.tsv:3: label 'spam' is not among the run's labels"):
        read_scored_run(damaged)


def test_cli_prints_pairs_interval_and_the_gap_last_and_logs_the_comparison_to_mlflow(tmp_path, capsys):
    gold, good_dir, weak_dir = random_runs(tmp_path)
    (good_dir / "mlflow_run_id").write_text("abc123\n")  # as the finetuning job leaves it
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert (
        compare_cli.main([str(good_dir), "--against", str(weak_dir), "--resamples", "100", "--tracking-uri", uri]) == 0
    )
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].startswith("classification: 200 rows of dev.tsv, 100 paired resamples")
    assert "95 % CI [" in out[-4]
    expected = f1_score(gold, gold_and_pred(read_scored_run(good_dir))[1], average="macro") - f1_score(
        gold, gold_and_pred(read_scored_run(weak_dir))[1], average="macro"
    )
    assert out[-1] == f"macro_f1_gap: {expected:.4f}"
    run_id = out[-2].split()[1]
    client = MlflowClient(uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["macro_f1_gap"] == pytest.approx(expected)
    assert run.data.metrics["ci_low"] < expected < run.data.metrics["ci_high"]
    assert run.data.tags["runs_mlflow_ids"] == "abc123" and run.data.tags["against_mlflow_ids"] == "-"
    assert run.data.params["units"] == "200" and run.data.params["resamples"] == "100"
    assert {a.path for a in client.list_artifacts(run_id)} == {"bootstrap.png", "pairs.tsv"}
    png = client.download_artifacts(run_id, "bootstrap.png", str(tmp_path))
    assert open(png, "rb").read(4) == b"\x89PNG"
    assert compare_cli.main([str(tmp_path / "missing"), "--against", str(weak_dir), "--tracking-uri", uri]) == 1
    assert "missing: neither classification_report.json nor ner_report.json" in capsys.readouterr().err


def encoder_runs(tmp_path, n=200):
    """Three encoders (right about 85 %, 70 %, 55 % of the time), two seeds each, on one file."""
    rng = np.random.default_rng(5)
    gold = rng.integers(0, 3, n)
    encoders = {}
    for name, keep in (("strong", 0.8), ("middle", 0.6), ("weak", 0.35)):
        encoders[name] = [
            write_run(tmp_path / f"{name}-{seed}", gold, np.where(rng.random(n) < keep, gold, rng.integers(0, 3, n)))
            for seed in (42, 1)
        ]
    return gold, encoders


def test_every_pair_of_encoders_is_the_two_list_comparison_on_the_same_resamples(tmp_path):
    from finetune.compare import compare_encoders

    _, encoder_dirs = encoder_runs(tmp_path)
    encoders = {name: [read_scored_run(d) for d in dirs] for name, dirs in encoder_dirs.items()}
    pairs = compare_encoders(encoders, n_resamples=200, seed=3)
    assert [(a, b) for a, b, _ in pairs] == [("strong", "middle"), ("strong", "weak"), ("middle", "weak")]
    for a, b, result in pairs:
        alone = compare(encoders[a], encoders[b], n_resamples=200, seed=3)
        assert (result.mean_gap, result.low, result.high) == (alone.mean_gap, alone.low, alone.high)
    # Same resamples for every pair: the gaps of a resample add up along a path (strong-weak = strong-middle +
    # middle-weak), exactly, resample by resample.
    by_pair = {(a, b): result.resamples for a, b, result in pairs}
    np.testing.assert_allclose(
        by_pair["strong", "weak"], by_pair["strong", "middle"] + by_pair["middle", "weak"], atol=1e-12
    )
    with pytest.raises(CompareError, match="runs per encoder: .*same number of runs"):
        compare_encoders({"strong": encoders["strong"], "weak": encoders["weak"][:1]})
    with pytest.raises(CompareError, match="name at least two encoders"):
        compare_encoders({"strong": encoders["strong"]})


def test_cli_compares_every_pair_of_encoders_as_a_table_and_logs_each_pair(tmp_path, capsys):
    gold, encoder_dirs = encoder_runs(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    argv = [arg for name, dirs in encoder_dirs.items() for arg in ("--encoder", name, *map(str, dirs))]
    assert compare_cli.main([*argv, "--resamples", "100", "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    means = {
        name: np.mean([f1_score(gold, gold_and_pred(read_scored_run(d))[1], average="macro") for d in dirs])
        for name, dirs in encoder_dirs.items()
    }
    assert f"| strong | 2 | {means['strong']:.4f} |" in out
    assert out[-1] == f"highest_mean: strong (mean macro F1 {means['strong']:.4f})"
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(compare_cli.EXPERIMENT_NAME).experiment_id])
    assert sorted((r.data.tags["runs_name"], r.data.tags["against_name"]) for r in runs) == [
        ("middle", "weak"),
        ("strong", "middle"),
        ("strong", "weak"),
    ]
    encoders = {name: [read_scored_run(d) for d in dirs] for name, dirs in encoder_dirs.items()}
    logged = {(r.data.tags["runs_name"], r.data.tags["against_name"]): r.data.metrics for r in runs}
    for (a, b), metrics in logged.items():  # each row and each MLflow run hold that pair's own comparison
        alone = compare(encoders[a], encoders[b], n_resamples=100)
        assert means[a] - means[b] == pytest.approx(alone.mean_gap) == pytest.approx(metrics["macro_f1_gap"])
        assert (metrics["ci_low"], metrics["ci_high"]) == pytest.approx((alone.low, alone.high))
        row = f"| {a} | {b} | {100 * alone.mean_gap:+.1f} | [{100 * alone.low:+.1f}, {100 * alone.high:+.1f}] |"
        assert any(line.startswith(row) for line in out)
    # A name that is also a directory (but not a run) is a name: e.g. the folder holding the encoder's seeds.
    (tmp_path / "strong-seeds").mkdir()
    named_like_a_folder = [arg if arg != "strong" else str(tmp_path / "strong-seeds") for arg in argv]
    assert compare_cli.main([*named_like_a_folder, "--resamples", "10", "--tracking-uri", uri]) == 0
    capsys.readouterr()
    # Refusals: a name without runs, a name twice, --encoder mixed with runs --against.
    assert compare_cli.main(["--encoder", "strong", "--encoder", "weak", *map(str, encoder_dirs["weak"])]) == 1
    assert "--encoder strong: give its runs after the name" in capsys.readouterr().err
    twice = ["--encoder", "weak", *map(str, encoder_dirs["weak"])] * 2
    assert compare_cli.main([*twice, "--tracking-uri", uri]) == 1
    assert "--encoder weak is given twice" in capsys.readouterr().err
    assert compare_cli.main(["--encoder", *map(str, encoder_dirs["weak"]), *argv]) == 1
    assert "the first value is the encoder's name, then its runs" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        compare_cli.main([str(encoder_dirs["weak"][0]), *argv])


# ------------------------------------------------------------------------------ KLUE NER
NER_TYPES = ("PS", "LC")


def random_tags(rng, length, flip=0.0, gold=None):
    """BIO tags over ``length`` characters; with ``gold``, a copy whose tags change with chance ``flip``
    (to any tag, so predictions also hold I- without B-, which strict IOB2 does not count as a span)."""
    tags = ["O", *(f"{p}-{t}" for t in NER_TYPES for p in "BI")]
    if gold is None:
        out, i = [], 0
        while i < length:
            if rng.random() < 0.3:
                span = min(int(rng.integers(1, 4)), length - i)
                entity_type = NER_TYPES[int(rng.integers(len(NER_TYPES)))]
                out += [f"B-{entity_type}", *[f"I-{entity_type}"] * (span - 1)]
                i += span
            else:
                out.append("O")
                i += 1
        return out
    return [tags[int(rng.integers(len(tags)))] if rng.random() < flip else g for g in gold]


def ner_sentences(n=30, seed=0):
    rng = np.random.default_rng(seed)
    sentences = []
    for i in range(n):
        text = "".join(" " if rng.random() < 0.2 else "가나다라마"[int(rng.integers(5))] for _ in range(12))
        sentences.append(NerSentence(f"dev_{i:03d}", text, random_tags(rng, len(text))))
    return sentences


def write_ner_run(run_dir, gold_file, predicted, name_the_file=True):
    """A KLUE NER run directory as run_finetune.py leaves it: report naming the scored file, predictions."""
    run_dir.mkdir(parents=True)
    (run_dir / "eval_predictions.tsv").write_text(format_klue_ner(predicted), encoding="utf-8")
    texts = [s.text for s in predicted]
    gold = {s.id: s for s in read_klue_ner(gold_file)}
    metrics = klue_ner_metrics(texts, [gold[s.id].tags for s in predicted], [s.tags for s in predicted])
    report = {"entity_macro_f1": metrics["entity_macro_f1"]}
    if name_the_file:
        report["eval_file"] = str(gold_file)
    (run_dir / "ner_report.json").write_text(json.dumps(report), encoding="utf-8")
    return run_dir


def predicted(run_dir):
    return read_klue_ner(run_dir / "eval_predictions.tsv")


def ner_runs(tmp_path, seed=0):
    rng = np.random.default_rng(seed)
    gold = ner_sentences()
    gold_file = tmp_path / "dev.tsv"
    gold_file.write_text(format_klue_ner(gold), encoding="utf-8")
    good = [NerSentence(s.id, s.text, random_tags(rng, len(s.text), 0.1, s.tags)) for s in gold]
    weak = [NerSentence(s.id, s.text, random_tags(rng, len(s.text), 0.5, s.tags)) for s in gold]
    return (
        gold,
        gold_file,
        write_ner_run(tmp_path / "good", gold_file, good),
        write_ner_run(tmp_path / "weak", gold_file, weak),
    )


def test_entity_counts_give_seqeval_macro_f1_for_any_resample_of_sentences():
    """Summed per-sentence counts equal seqeval's strict macro F1 on the resampled sentence list (brute force)."""
    rng = np.random.default_rng(1)
    gold = [random_tags(rng, 10) for _ in range(12)]
    pred = [random_tags(rng, 10, 0.3, g) for g in gold]
    types, counts = entity_counts(gold, pred, NER_TYPES)
    assert types == list(NER_TYPES)
    assert macro_f1(counts.sum(0), all_classes=False) == pytest.approx(entity_f1(gold, pred))
    for _ in range(30):
        idx = rng.integers(0, len(gold), len(gold))  # with repeats, as a bootstrap draws
        expected = entity_f1([gold[i] for i in idx], [pred[i] for i in idx])
        assert macro_f1(counts[idx].sum(0), all_classes=False) == pytest.approx(expected)
    # A type that occurs in neither gold nor predictions is left out, as seqeval leaves it out
    # (averaged in as 0, LC would halve the figure).
    only_ps = [["B-PS", "I-PS", "O"]], [["B-PS", "I-PS", "O"]]
    assert macro_f1(entity_counts(*only_ps, NER_TYPES)[1].sum(0), all_classes=False) == entity_f1(*only_ps) == 1.0


def test_ner_runs_read_back_to_the_jobs_entity_macro_f1_and_compare(tmp_path):
    gold, gold_file, good_dir, weak_dir = ner_runs(tmp_path)
    good, weak = read_scored_run(good_dir), read_scored_run(weak_dir)
    for run, run_dir in ((good, good_dir), (weak, weak_dir)):
        report = json.loads((run_dir / "ner_report.json").read_text())
        assert run.macro_f1() == pytest.approx(report["entity_macro_f1"], abs=1e-9)
    assert good.task == "KLUE NER" and good.units == [s.id for s in gold]
    result = compare([good], [weak], n_resamples=200)
    expected = (
        json.loads((good_dir / "ner_report.json").read_text())["entity_macro_f1"]
        - json.loads((weak_dir / "ner_report.json").read_text())["entity_macro_f1"]
    )
    assert result.mean_gap == pytest.approx(expected)
    assert 0 < result.low < result.mean_gap < result.high
    # Paired over sentences: a run against its own predictions differs by exactly 0 in every resample.
    twin = compare([good], [read_scored_run(write_ner_run(tmp_path / "twin", gold_file, predicted(good_dir)))])
    assert np.all(twin.resamples == 0.0)


def test_ner_runs_that_cannot_be_read_or_compared_say_what_to_pass(tmp_path, capsys):
    gold, gold_file, good_dir, weak_dir = ner_runs(tmp_path)
    old = write_ner_run(tmp_path / "old", gold_file, predicted(good_dir), name_the_file=False)
    with pytest.raises(CompareError, match=r"old/ner_report.json does not name the file .*pass --gold"):
        read_scored_run(old)
    assert read_scored_run(old, gold_file=gold_file).macro_f1() == read_scored_run(good_dir).macro_f1()
    other = tmp_path / "other.tsv"
    other.write_text(format_klue_ner(ner_sentences(seed=5)), encoding="utf-8")
    with pytest.raises(CompareError, match=r"sentence 'dev_000' has another text in .*other.tsv: the run scored"):
        read_scored_run(good_dir, gold_file=other)
    moved = tmp_path / "moved"
    write_ner_run(moved, gold_file, predicted(good_dir))
    gold_file.rename(tmp_path / "dev-moved.tsv")
    with pytest.raises(CompareError, match=r"dev.tsv \(the gold file of .*\): not found: pass --gold"):
        read_scored_run(moved)
    _, classification_dir, _ = random_runs(tmp_path / "classification")
    with pytest.raises(CompareError, match="not one task"):
        compare(
            [read_scored_run(classification_dir)], [read_scored_run(weak_dir, gold_file=tmp_path / "dev-moved.tsv")]
        )
    # The command line: --gold for runs whose report names no file; the metric is named.
    argv = [str(old), "--against", str(weak_dir), "--gold", str(tmp_path / "dev-moved.tsv"), "--resamples", "50"]
    argv += ["--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
    assert compare_cli.main(argv) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].startswith("KLUE NER: 30 sentences of") and "entity macro F1" in out[1]
    assert out[-1].startswith("macro_f1_gap: ")


def test_a_run_that_does_not_read_back_to_its_reported_figure_is_refused(tmp_path, capsys):
    gold, gold_file, good_dir, weak_dir = ner_runs(tmp_path)
    # The same sentences with other tags (another release of the file): ids and texts match, figures do not.
    relabelled = tmp_path / "relabelled.tsv"
    relabelled.write_text(
        format_klue_ner([NerSentence(s.id, s.text, ["O"] * len(s.text)) for s in gold]), encoding="utf-8"
    )
    with pytest.raises(CompareError, match=r"its ner_report.json says entity_macro_f1=.*pass --gold"):
        read_scored_run(good_dir, gold_file=relabelled)
    # A classification predictions file changed after the report was written.
    labels_gold, run_dir, _ = random_runs(tmp_path / "classification")
    lines = (run_dir / "eval_predictions.tsv").read_text().splitlines()
    row = lines[1].split("\t")
    row[4] = next(label for label in LABELS if label != row[4])  # the predicted column
    lines[1] = "\t".join(row)
    (run_dir / "eval_predictions.tsv").write_text("\n".join(lines) + "\n")
    with pytest.raises(CompareError, match=r"classification_report.json says macro_f1=.*was changed"):
        read_scored_run(run_dir)
    with pytest.raises(CompareError, match="--gold is for KLUE NER runs"):
        read_scored_run(run_dir, gold_file=gold_file)
    one_row = write_run(tmp_path / "one", labels_gold[:1], labels_gold[:1])
    with pytest.raises(CompareError, match="1 rows scored: a bootstrap needs at least 2"):
        read_scored_run(one_row)
    (weak_dir / "test_predictions.tsv").write_text((weak_dir / "eval_predictions.tsv").read_text())
    with pytest.raises(CompareError, match=r"weak/test_report.json: not found: the run directory is incomplete"):
        read_scored_run(weak_dir, split="test")
    good, weak = read_scored_run(good_dir), read_scored_run(weak_dir)
    with pytest.raises(CompareError, match="--resamples 0: draw at least one"):
        compare([good], [weak], n_resamples=0)
    # A store that cannot be written loses the record, not the figures.
    (tmp_path / "a-file").write_text("not a directory")
    unwritable = f"sqlite:///{tmp_path / 'a-file' / 'mlflow.db'}"
    assert (
        compare_cli.main([str(good_dir), "--against", str(weak_dir), "--resamples", "20", "--tracking-uri", unwritable])
        == 0
    )
    captured = capsys.readouterr()
    assert captured.out.strip().splitlines()[-1].startswith("macro_f1_gap: ")
    assert f"warning: not logged to MLflow at {unwritable}" in captured.err

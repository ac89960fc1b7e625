"""Is one encoder better than another downstream, or is it the evaluation file's luck?

    python -m finetune.compare <run> [<run> ...] --against <run> [<run> ...]

Each ``<run>`` is a classification run directory of ``run_finetune.py`` (its
``eval_predictions.tsv`` and ``classification_report.json``); the runs of the two
lists are paired in order (e.g. the same seed pretrained and random), and every run
must have scored the same rows of the same file. Prints each pair's macro-F1 gap,
then the mean gap over the pairs with a 95 % confidence interval from a paired
bootstrap over the evaluation rows (Koehn 2004; ``scipy.stats.bootstrap`` with
``paired=True``: each resample draws the same rows for every run, so what the runs
share cancels), the share of resamples in which the first list is not ahead, and
last ``macro_f1_gap: <x>``.

The interval answers "would another file of this size drawn the same way give the
same verdict" for these trained models; seed-to-seed variation is in the spread of
the per-pair gaps, which is why several pairs are better than one. ``--split test``
compares the ``test_predictions.tsv`` of runs that scored a test file.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import bootstrap
from sklearn.metrics import f1_score
from tqdm.auto import tqdm

from finetune.classification.outputs import PREDICTIONS_TSV, REPORT_JSON, TEST_PREDICTIONS_TSV

PREDICTION_FILES = {"eval": PREDICTIONS_TSV, "test": TEST_PREDICTIONS_TSV}


class CompareError(ValueError):
    """Runs that cannot be compared; the message names the file and what to do."""


@dataclass(frozen=True)
class RunPredictions:
    run_dir: Path
    labels: list[str]
    rows: list[str]  # "file:line" of each scored row, in order
    gold: np.ndarray  # label ids
    pred: np.ndarray


def read_run(run_dir: str | Path, split: str = "eval") -> RunPredictions:
    """The predictions a classification run wrote for its evaluation (or test) file."""
    run_dir = Path(run_dir)
    report, predictions = run_dir / REPORT_JSON, run_dir / PREDICTION_FILES[split]
    if not report.is_file():
        hint = (
            " (a KLUE NER run: only classification runs are compared)"
            if (run_dir / "ner_report.json").is_file()
            else ""
        )
        raise CompareError(f"{report}: not found{hint}: pass the run_dir: that run_finetune.py printed")
    labels = json.loads(report.read_text(encoding="utf-8"))["labels"]
    if not predictions.is_file():
        what = "scored no test file (task.test_file)" if split == "test" else "wrote no predictions"
        raise CompareError(f"{predictions}: not found: the run {what}")
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
    return RunPredictions(run_dir, labels, rows, np.array(gold), np.array(pred))


def check_comparable(runs: Sequence[RunPredictions]) -> None:
    first = runs[0]
    for run in runs[1:]:
        if run.labels != first.labels:
            raise CompareError(f"{run.run_dir} has labels {run.labels}, {first.run_dir} {first.labels}: not one task")
        if run.rows != first.rows or not np.array_equal(run.gold, first.gold):
            raise CompareError(
                f"{run.run_dir} and {first.run_dir} scored different rows ({run.rows[0]} ... against "
                f"{first.rows[0]} ...): compare runs evaluated on the same file"
            )


def macro_f1(gold: np.ndarray, pred: np.ndarray) -> float:
    # Over the labels that occur in gold or predictions, as the job's own figure (torchmetrics)
    # counts them: a label absent from both is left out, not scored 0.
    return float(f1_score(gold, pred, average="macro", zero_division=0))


@dataclass(frozen=True)
class Comparison:
    pair_gaps: list[float]  # macro F1 of a run of the first list minus its partner's
    mean_gap: float
    low: float
    high: float
    not_ahead: float  # share of resamples where the mean gap is <= 0
    resamples: np.ndarray  # the bootstrap distribution of the mean gap


def compare(
    runs: Sequence[RunPredictions],
    against: Sequence[RunPredictions],
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    progress: bool = False,
) -> Comparison:
    """Mean macro-F1 gap of ``runs`` over ``against`` (paired in order) and its paired-bootstrap interval."""
    if len(runs) != len(against) or not runs:
        raise CompareError(f"{len(runs)} runs against {len(against)}: pair each run with one of --against")
    check_comparable([*runs, *against])
    gold = runs[0].gold

    bar = tqdm(total=n_resamples, desc="bootstrap", unit="resample", disable=not progress)

    def mean_gap(gold_sample, *predictions):
        bar.update(1)  # scipy calls this once per resample (vectorized=False)
        k = len(predictions) // 2
        return np.mean(
            [
                macro_f1(gold_sample, a) - macro_f1(gold_sample, b)
                for a, b in zip(predictions[:k], predictions[k:], strict=True)
            ]
        )

    data = (gold, *(r.pred for r in runs), *(r.pred for r in against))
    result = bootstrap(
        data,
        mean_gap,
        paired=True,
        vectorized=False,
        n_resamples=n_resamples,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    bar.close()
    gaps = [macro_f1(gold, a.pred) - macro_f1(gold, b.pred) for a, b in zip(runs, against, strict=True)]
    distribution = result.bootstrap_distribution
    return Comparison(
        pair_gaps=gaps,
        mean_gap=float(np.mean(gaps)),
        low=float(result.confidence_interval.low),
        high=float(result.confidence_interval.high),
        not_ahead=float(np.mean(distribution <= 0)),
        resamples=distribution,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Macro-F1 gap between classification runs, with a paired-bootstrap 95 % interval."
    )
    parser.add_argument("runs", nargs="+", help="run directories of run_finetune.py (e.g. pretrained, one per seed)")
    parser.add_argument("--against", nargs="+", required=True, help="the runs to compare with, paired in order")
    parser.add_argument("--split", choices=sorted(PREDICTION_FILES), default="eval", help="evaluation or test file")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the resampling")
    args = parser.parse_args(argv)
    try:
        runs = [read_run(r, args.split) for r in args.runs]
        against = [read_run(r, args.split) for r in args.against]
        result = compare(runs, against, args.resamples, args.seed, progress=True)
    except CompareError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{len(runs[0].rows)} rows of {runs[0].rows[0].rsplit(':', 1)[0]}, {args.resamples} paired resamples")
    for run, other, gap in zip(runs, against, result.pair_gaps, strict=True):
        print(f"{run.run_dir} - {other.run_dir}: {100 * gap:+.1f} macro F1")
    print(f"mean gap {100 * result.mean_gap:+.1f}, 95 % CI [{100 * result.low:+.1f}, {100 * result.high:+.1f}]")
    print(f"resamples where the first runs are not ahead: {result.not_ahead:.3f}")
    print(f"macro_f1_gap: {result.mean_gap:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

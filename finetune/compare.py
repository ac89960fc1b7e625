"""Is one encoder better than another downstream, or is it the evaluation file's luck?

    python -m finetune.compare <run> [<run> ...] --against <run> [<run> ...] [--gold FILE]
    python -m finetune.compare --encoder NAME <run> [<run> ...] --encoder NAME <run> [...] [--encoder ...]

Each ``<run>`` is a run directory of ``run_finetune.py``: a classification task (hate
speech, NSMC, KLUE NLI: macro F1 over the evaluation rows) or KLUE NER (entity macro F1
over the sentences, as KLUE scores it). The runs of the two lists are paired in order
(e.g. the same seed pretrained and random), and every run must have scored the same rows
of the same file. Prints each pair's gap, then the mean gap over the pairs with a 95 %
confidence interval from a paired bootstrap over the evaluation rows or sentences
(Koehn 2004; ``scipy.stats.bootstrap``: each resample draws the same rows for every
run, so what the runs share cancels), the share of resamples in which the first list is
not ahead, and last ``macro_f1_gap: <x>``. The comparison is an MLflow run of experiment
``bert-lm-comparisons`` in the project's store (``--tracking-uri``): the gap, its interval and
each pair's gap as metrics, the compared runs' MLflow ids as tags, and a histogram of the
bootstrap distribution.

With ``--encoder`` (two or more, each a name and its runs, paired by position across
encoders: the same seeds in the same order), every pair of encoders is compared the same
way, on the same resamples, and printed as a table: each encoder's mean score, then each
pair's gap, interval and share not ahead; each pair is its own MLflow run, named after the
two encoders.

The interval answers "would another file of this size drawn the same way give the
same verdict" for these trained models; seed-to-seed variation is in the spread of
the per-pair gaps, which is why several pairs are better than one. ``--split test``
compares the test-file predictions of runs that scored one (``task.test_file``).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import bootstrap

from bert_lm.tracking import DEFAULT_TRACKING_URI, ensure_experiment, run_id_of
from finetune.scored_runs import SPLITS, CompareError, ScoredRun, is_scored_run, read_scored_run

EXPERIMENT_NAME = "bert-lm-comparisons"

__all__ = ["CompareError", "Comparison", "compare", "read_scored_run"]


def check_comparable(runs: Sequence[ScoredRun]) -> None:
    first = runs[0]
    for run in runs[1:]:
        if (run.task, run.classes) != (first.task, first.classes):
            raise CompareError(
                f"{run.run_dir} is a {run.task} run over {run.classes}, {first.run_dir} a {first.task} run over "
                f"{first.classes}: not one task"
            )
        if run.units != first.units:
            at = next(
                (i for i, (a, b) in enumerate(zip(run.units, first.units, strict=False)) if a != b),
                min(len(run.units), len(first.units)),
            )
            theirs = run.units[at] if at < len(run.units) else "(end)"
            ours = first.units[at] if at < len(first.units) else "(end)"
            raise CompareError(
                f"{run.run_dir} and {first.run_dir} scored different {first.unit_name} ({len(run.units)} against "
                f"{len(first.units)}; {first.unit_name} {at + 1}: {theirs} against {ours}): compare runs evaluated "
                "on the same file"
            )
        if not np.array_equal(run.gold_counts, first.gold_counts):
            raise CompareError(
                f"{run.run_dir} and {first.run_dir} scored the same {first.unit_name} with different gold labels "
                f"({run.source} against {first.source}): compare runs scored against the same annotations"
            )


@dataclass(frozen=True)
class Comparison:
    pair_gaps: list[float]  # macro F1 of a run of the first list minus its partner's
    mean_gap: float
    low: float
    high: float
    not_ahead: float  # share of resamples where the mean gap is <= 0
    resamples: np.ndarray  # the bootstrap distribution of the mean gap


def compare(
    runs: Sequence[ScoredRun],
    against: Sequence[ScoredRun],
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> Comparison:
    """Mean macro-F1 gap of ``runs`` over ``against`` (paired in order) and its paired-bootstrap interval."""
    if len(runs) != len(against) or not runs:
        raise CompareError(f"{len(runs)} runs against {len(against)}: pair each run with one of --against")
    if n_resamples < 1:
        raise CompareError(f"--resamples {n_resamples}: draw at least one resample (1,000 or more for an interval)")
    check_comparable([*runs, *against])
    n_units, k = len(runs[0].units), len(runs)
    # (units, 2k * classes * 3): a resample's totals are its units' multiplicities times this.
    per_unit = np.stack([r.counts for r in (*runs, *against)], axis=1).reshape(n_units, -1).astype(np.float64)

    def mean_gap(indices: np.ndarray, axis: int = -1) -> np.ndarray:
        # scipy resamples the unit indices (as it does itself for paired=True); every run's
        # counts are summed over the same drawn units, so the runs stay paired.
        indices = np.asarray(indices)
        flat = indices.reshape(-1, indices.shape[-1])
        multiplicity = np.zeros((len(flat), n_units), dtype=np.float64)
        np.add.at(multiplicity, (np.arange(len(flat))[:, None], flat), 1.0)
        totals = (multiplicity @ per_unit).reshape(len(flat), 2 * k, *runs[0].counts.shape[1:])
        scores = runs[0].macro_f1(totals)
        gaps = (scores[:, :k] - scores[:, k:]).mean(axis=1)
        return gaps.reshape(indices.shape[:-1])

    result = bootstrap(
        (np.arange(n_units),),
        mean_gap,
        vectorized=True,
        # Resamples a call: the multiplicities are (batch, units) floats, so a 50,000-row test file
        # with 10,000 resamples stays at about 16 MB a batch instead of 4 GB at once.
        batch=max(1, 2_000_000 // n_units),
        n_resamples=n_resamples,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    gaps = [a.macro_f1() - b.macro_f1() for a, b in zip(runs, against, strict=True)]
    distribution = result.bootstrap_distribution
    return Comparison(
        pair_gaps=gaps,
        mean_gap=float(np.mean(gaps)),
        low=float(result.confidence_interval.low),
        high=float(result.confidence_interval.high),
        not_ahead=float(np.mean(distribution <= 0)),
        resamples=distribution,
    )


def compare_encoders(
    encoders: dict[str, Sequence[ScoredRun]], n_resamples: int = 1000, seed: int = 0
) -> list[tuple[str, str, Comparison]]:
    """Every pair of encoders (in the order given): ``(first, second, first's gap over second)``.
    The runs of each encoder are paired by position with every other's; each pair is resampled
    with the same seed, so every interval comes from the same resamples of the file."""
    if len(encoders) < 2:
        raise CompareError(f"{len(encoders)} --encoder given: name at least two encoders, each with its runs")
    counts = {name: len(runs) for name, runs in encoders.items()}
    if len(set(counts.values())) != 1:
        raise CompareError(
            f"runs per encoder: {counts}; give every --encoder the same number of runs, paired by position "
            "(e.g. seeds 42 1 2 3 in that order)"
        )
    check_comparable([run for runs in encoders.values() for run in runs])
    return [
        (first, second, compare(encoders[first], encoders[second], n_resamples, seed))
        for first, second in itertools.combinations(encoders, 2)
    ]


def log_comparison(
    result: Comparison,
    runs: Sequence[ScoredRun],
    against: Sequence[ScoredRun],
    split: str,
    n_resamples: int,
    seed: int,
    tracking_uri: str = DEFAULT_TRACKING_URI,
    names: tuple[str, str] | None = None,
) -> str:
    """Record the comparison as a finished MLflow run in ``bert-lm-comparisons``; returns its id.
    ``names``: the two encoders' names (``--encoder``), else the first runs' directory names."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    from finetune.plots import plot_bootstrap

    client = MlflowClient(tracking_uri)
    first = runs[0]
    runs_name, against_name = names or (Path(first.run_dir).name, Path(against[0].run_dir).name)
    name = f"{runs_name} vs {against_name} ({first.task}, {len(runs)} pairs)"
    tags = {
        "task": first.task,
        "runs_name": runs_name,
        "against_name": against_name,
        # MLflow ids of the compared runs (where their directories name one), to find them in the UI.
        "runs_mlflow_ids": ",".join(run_id_of(r.run_dir) or "-" for r in runs),
        "against_mlflow_ids": ",".join(run_id_of(r.run_dir) or "-" for r in against),
    }
    run = client.create_run(ensure_experiment(client, EXPERIMENT_NAME, tracking_uri), run_name=name, tags=tags)
    now = int(time.time() * 1000)
    metrics = [
        Metric("macro_f1_gap", result.mean_gap, now, 0),
        Metric("ci_low", result.low, now, 0),
        Metric("ci_high", result.high, now, 0),
        Metric("not_ahead", result.not_ahead, now, 0),
        *(Metric("pair_gap", gap, now, i) for i, gap in enumerate(result.pair_gaps)),
    ]
    params = {
        "metric": first.metric,
        "split": split,
        "file": first.source,
        "units": len(first.units),
        "pairs": len(runs),
        "resamples": n_resamples,
        "seed": seed,
        # MLflow params hold 6,000 characters; the full lists are in the artifact below.
        "runs": ",".join(str(r.run_dir) for r in runs)[:6000],
        "against": ",".join(str(r.run_dir) for r in against)[:6000],
    }
    client.log_batch(run.info.run_id, metrics=metrics, params=[Param(k, str(v)) for k, v in params.items()])
    with tempfile.TemporaryDirectory() as tmp:
        title = f"{first.task}: {len(runs)} pairs, {len(first.units)} {first.unit_name} of {Path(first.source).name}"
        png = plot_bootstrap(
            result.resamples, result.mean_gap, result.low, result.high, Path(tmp) / "bootstrap.png", title, first.metric
        )
        pairs = Path(tmp) / "pairs.tsv"
        pairs.write_text(
            "run\tagainst\tgap\n"
            + "".join(
                f"{a.run_dir}\t{b.run_dir}\t{g:.6f}\n" for a, b, g in zip(runs, against, result.pair_gaps, strict=True)
            ),
            encoding="utf-8",
        )
        client.log_artifact(run.info.run_id, str(png))
        client.log_artifact(run.info.run_id, str(pairs))
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Macro-F1 gap between finetuning runs (classification or KLUE NER), with a paired-bootstrap "
        "95 %% interval."
    )
    parser.add_argument("runs", nargs="*", help="run directories of run_finetune.py (e.g. pretrained, one per seed)")
    parser.add_argument("--against", nargs="+", help="the runs to compare with, paired in order")
    parser.add_argument(
        "--encoder",
        nargs="+",
        action="append",
        metavar=("NAME", "RUN"),
        help="an encoder's name and its runs; two or more compare every pair (instead of runs --against)",
    )
    parser.add_argument("--split", choices=SPLITS, default="eval", help="evaluation or test file")
    parser.add_argument(
        "--gold", help="KLUE NER: the file the runs scored, for runs whose report does not name it (older runs)"
    )
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the resampling")
    parser.add_argument("--tracking-uri", default=DEFAULT_TRACKING_URI, help="MLflow store (default: the project's)")
    args = parser.parse_args(argv)
    if args.encoder:
        if args.runs or args.against:
            parser.error("give either runs --against runs, or --encoder NAME RUN ... two or more times, not both")
        return compare_encoders_main(args)
    if not args.runs or not args.against:
        parser.error("give runs and --against runs (or --encoder NAME RUN ... two or more times)")
    try:
        runs = [read_scored_run(r, args.split, args.gold) for r in args.runs]
        against = [read_scored_run(r, args.split, args.gold) for r in args.against]
        result = compare(runs, against, args.resamples, args.seed)
    except CompareError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    first = runs[0]
    print(f"{first.task}: {len(first.units)} {first.unit_name} of {first.source}, {args.resamples} paired resamples")
    for run, other, gap in zip(runs, against, result.pair_gaps, strict=True):
        print(f"{run.run_dir} - {other.run_dir}: {100 * gap:+.1f} {first.metric}")
    print(f"mean gap {100 * result.mean_gap:+.1f}, 95 % CI [{100 * result.low:+.1f}, {100 * result.high:+.1f}]")
    print(f"resamples where the first runs are not ahead: {result.not_ahead:.3f}")
    try:  # the figures are printed already; a store that cannot be written loses only the record
        run_id = log_comparison(result, runs, against, args.split, args.resamples, args.seed, args.tracking_uri)
        print(f"mlflow_run_id: {run_id} (experiment {EXPERIMENT_NAME}, {args.tracking_uri})")
    except Exception as err:  # noqa: BLE001 - MLflow raises many kinds (MlflowException, OSError, sqlalchemy's)
        print(f"warning: not logged to MLflow at {args.tracking_uri}: {err}: pass --tracking-uri", file=sys.stderr)
    print(f"macro_f1_gap: {result.mean_gap:.4f}")
    return 0


def compare_encoders_main(args: argparse.Namespace) -> int:
    """``--encoder NAME RUN ...`` twice or more: a table of every pair."""
    try:
        encoders: dict[str, list[ScoredRun]] = {}
        for name, *run_dirs in args.encoder:
            if not run_dirs:
                raise CompareError(f"--encoder {name}: give its runs after the name (--encoder NAME RUN [RUN ...])")
            if name in encoders:
                raise CompareError(f"--encoder {name} is given twice: name each encoder once")
            if is_scored_run(name):  # a run where the name belongs
                raise CompareError(f"--encoder {name}: the first value is the encoder's name, then its runs")
            encoders[name] = [read_scored_run(r, args.split, args.gold) for r in run_dirs]
        pairs = compare_encoders(encoders, args.resamples, args.seed)
    except CompareError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    first = next(iter(encoders.values()))[0]
    print(f"{first.task}: {len(first.units)} {first.unit_name} of {first.source}, {args.resamples} paired resamples")
    means = {name: float(np.mean([run.macro_f1() for run in runs])) for name, runs in encoders.items()}
    print(f"\n| encoder | runs | mean {first.metric} |\n|---|---:|---:|")
    for name, runs in encoders.items():
        print(f"| {name} | {len(runs)} | {means[name]:.4f} |")
    print("\n| encoder | against | mean gap | 95 % CI | resamples not ahead |\n|---|---|---:|---|---:|")
    for a, b, result in pairs:
        print(
            f"| {a} | {b} | {100 * result.mean_gap:+.1f} | [{100 * result.low:+.1f}, {100 * result.high:+.1f}] "
            f"| {result.not_ahead:.3f} |"
        )
    try:  # the figures are printed already; a store that cannot be written loses only the record
        for a, b, result in pairs:
            run_id = log_comparison(
                result, encoders[a], encoders[b], args.split, args.resamples, args.seed, args.tracking_uri, (a, b)
            )
            print(f"mlflow_run_id: {run_id} ({a} vs {b}, experiment {EXPERIMENT_NAME}, {args.tracking_uri})")
    except Exception as err:  # noqa: BLE001 - MLflow raises many kinds (MlflowException, OSError, sqlalchemy's)
        print(f"warning: not logged to MLflow at {args.tracking_uri}: {err}: pass --tracking-uri", file=sys.stderr)
    best = max(means, key=means.get)
    # The highest mean, not a verdict: whether it is ahead of each other encoder is the table's intervals.
    print(f"highest_mean: {best} (mean {first.metric} {means[best]:.4f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

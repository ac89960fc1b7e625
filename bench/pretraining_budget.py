"""Default settings against the small-budget recipe, same corpus, tokenizer and wall-clock.

    python bench/pretraining_budget.py

Pretrains ``model=small`` on ../shared/data/korean_petitions twice, back to back, each for
the same training time (``train.budget_minutes``, so both schedules follow the clock):
once with the default settings (post-LN, dropout 0.1, 15 % masking, MLM + NSP, lr 5e-4)
and once with ``experiment=small_budget`` (pre-LN exported as RobertaPreLayerNorm, no
dropout, 15 % single-token masking, MLM only, lr 1e-3). Validation runs every
``VAL_EVERY`` steps on a slice of the held-out split; both runs' held-out MLM accuracy is
read back from MLflow against their elapsed training minutes, tabled and plotted
(``mlm_acc_vs_minutes.png``). Each run masks its validation as it trains (its own ratio and whole-word setting),
so the final comparison is ``python -m bert_lm.evaluate`` on the same valid split with
the same 15 % masks for both models.

Prints ``recipe_vs_default_mlm_acc: <ratio>`` last (recipe / default, evaluated on
identical masks). Not part of the tests.

    python bench/pretraining_budget.py --ablations    # ~4.5 minutes a run, 11 runs
    python bench/pretraining_budget.py --ablations --jobs 2 --minutes 6

adds one-lever ablations: the recipe with one of its levers set back to the default (or
moved further), each on the same corpus, tokenizer and time, all evaluated on identical masks.
``--jobs N`` runs N at once, each limited to cpu_count / N threads (every run gets the same
share of the machine, so equal minutes stay comparable); ``--minutes`` sets each run's budget.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

PETITIONS = REPO_ROOT.parent / "shared" / "data" / "korean_petitions"
BUDGET_MINUTES = 3.5  # training time of each run (validation and checkpoints come on top)
VAL_EVERY = 100  # steps between validations (on VAL_BATCHES batches of the held-out split)
VAL_BATCHES = 10
RUNS = {
    "default": [],
    "recipe": ["experiment=small_budget"],
}
# One lever at a time, from the recipe: what each is worth at this budget.
ABLATIONS = {
    "recipe, post-LN": ["experiment=small_budget", "model.model_type=bert", "model.type_vocab_size=2",
                        "model.max_position_embeddings=128"],
    "recipe, dropout 0.1": ["experiment=small_budget", "model.hidden_dropout_prob=0.1",
                            "model.attention_probs_dropout_prob=0.1"],
    "recipe, masking 40 %": ["experiment=small_budget", "data.mask_ratio=0.4"],
    "recipe, lr 5e-4": ["experiment=small_budget", "train.lr=5e-4"],
    "recipe, lr 2e-3": ["experiment=small_budget", "train.lr=2e-3"],
    "recipe, batch 64": ["experiment=small_budget", "data.batch_size=64"],
    "recipe, batch 16": ["experiment=small_budget", "data.batch_size=16"],
    "recipe, packed documents": ["experiment=small_budget", "data.pack_documents=true"],
    "recipe, whole-word masking": ["experiment=small_budget", "data.whole_word_mask=true"],
    "recipe, sequence 64": ["experiment=small_budget", "data.max_len=64"],
    "recipe, constant lr": ["experiment=small_budget", "train.scheduler=constant"],
    "recipe, random position rows": ["experiment=small_budget", "model.position_init=normal"],
}
COMMON = [
    "data=petitions",
    f"data.root={PETITIONS}",
    "model=small",
    f"trainer.val_check_interval={VAL_EVERY}",
    f"trainer.limit_val_batches={VAL_BATCHES}",
    "trainer.log_every_n_steps=10",
    "trainer.enable_progress_bar=false",
]


def slug(name: str) -> str:
    return re.sub(r"\W+", "-", name).strip("-")


def start_pretraining(name: str, extra: list[str], out_dir: Path, minutes: float, threads: int) -> subprocess.Popen:
    command = [sys.executable, "run.py", *COMMON, f"train.budget_minutes={minutes}", *extra,
               f"hydra.run.dir={out_dir}", f"logger.run_name=bench-pretraining-budget-{slug(name)}"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    return subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish_pretraining(name: str, process: subprocess.Popen) -> Path:
    stdout, stderr = process.communicate()
    if process.returncode != 0:
        sys.exit(f"pretraining ({name}) failed:\n{stderr[-3000:]}")
    return Path(re.search(r"^run_dir: (.+)$", stdout, re.M).group(1))


def curve(run_dir: Path) -> list[tuple[float, float]]:
    """(elapsed training minutes, held-out MLM accuracy) at each validation, from MLflow."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{REPO_ROOT / 'mlflow.db'}")
    run_id = (run_dir / "mlflow_run_id").read_text().strip()
    elapsed = {m.step: m.value for m in client.get_metric_history(run_id, "train/budget_elapsed_min")}
    points = []
    for metric in client.get_metric_history(run_id, "val/mlm_acc"):
        steps = [s for s in elapsed if s <= metric.step]
        if steps:
            points.append((elapsed[max(steps)], metric.value))
    return sorted(points)


def evaluate(run_dir: Path, valid_file: Path) -> float:
    """MLM accuracy on the valid split with the same fixed 15 % masks for every model."""
    command = [sys.executable, "-m", "bert_lm.evaluate", str(run_dir), "--data", str(valid_file),
               "--source", "plain", "--no-split-sentences", "--mask-ratio", "0.15", "--seed", "0", "--no-nsp"]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"evaluate {run_dir} failed:\n{result.stderr[-3000:]}")
    return float(re.search(r"^mlm_acc: ([\d.]+)$", result.stdout, re.M).group(1))


def prepared_valid_file() -> Path:
    """The held-out split both runs validated on (the prepare step's cached output)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from bert_lm.config.hydra_setup import CONFIG_DIR, setup_hydra
    from bert_lm.training.corpus_pipeline import ensure_prepared_corpus

    setup_hydra()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=COMMON)
    return ensure_prepared_corpus(cfg.data, cfg.paths.cache_dir, show_progress=False) / "valid.txt"


def plot(curves: dict[str, list[tuple[float, float]]], path: Path, minutes: float) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for name, points in curves.items():
        axes.plot([m for m, _ in points], [a for _, a in points], marker="o", label=name)
    axes.set_xlabel("training minutes")
    axes.set_ylabel("held-out MLM accuracy (own masking)")
    axes.set_title(f"model=small on the petitions, {minutes} min each")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ablations", action="store_true", help="also run the one-lever ablations")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once, each on cpu_count / jobs threads")
    parser.add_argument("--minutes", type=float, default=BUDGET_MINUTES, help="training minutes of each run")
    args = parser.parse_args()
    if not PETITIONS.exists():
        print(f"skipped: {PETITIONS} absent; this benchmark needs the petitions archive in ../shared/data")
        return
    started = time.monotonic()
    out_root = REPO_ROOT / "outputs" / "bench" / "pretraining_budget" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    out_root.mkdir(parents=True, exist_ok=True)
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    print(f"{os.cpu_count()} cpus, load average {os.getloadavg()[0]:.1f}; {args.jobs} run(s) at once on {threads} "
          f"thread(s) each, {args.minutes} training minutes each; outputs in {out_root}", flush=True)
    valid_file = prepared_valid_file()  # built once here, before parallel runs race for it
    runs = dict(RUNS)
    if args.ablations:
        runs.update(ABLATIONS)
    run_dirs, curves = {}, {}
    names = list(runs)
    for first in range(0, len(names), args.jobs):
        batch = names[first : first + args.jobs]
        processes = {name: start_pretraining(name, runs[name], out_root / slug(name), args.minutes, threads)
                     for name in batch}
        for name, process in processes.items():
            run_dirs[name] = finish_pretraining(name, process)
            curves[name] = curve(run_dirs[name])
            print(f"{name}: {len(curves[name])} validations, last {curves[name][-1] if curves[name] else None}",
                  flush=True)
    plot(curves, out_root / "mlm_acc_vs_minutes.png", args.minutes)
    print("\n| run | training minutes | held-out MLM accuracy (own masking) |")
    print("|---|---:|---:|")
    for name, points in curves.items():
        for minutes, accuracy in points:
            print(f"| {name} | {minutes:.2f} | {accuracy:.4f} |")
    final = {name: evaluate(run_dir, valid_file) for name, run_dir in run_dirs.items()}
    print("\n| run | MLM accuracy, identical 15 % masks |")
    print("|---|---:|")
    for name, accuracy in final.items():
        print(f"| {name} | {accuracy:.4f} |")
    print(f"valid split: {valid_file} (15 % masks, seed 0)")
    print(f"plot: {out_root / 'mlm_acc_vs_minutes.png'}; total wall time {time.monotonic() - started:.0f} s")
    print(f"recipe_vs_default_mlm_acc: {final['recipe'] / max(final['default'], 1e-9):.2f}")


if __name__ == "__main__":
    main()

"""Does pretraining help KLUE NER? Pretrained vs randomly initialised encoder, CRF vs softmax head.

    python bench/ner_experiment.py

1. Pretrains ``model=small`` (H256 L2, MLM only) on ../shared/data/korean_petitions with
   ``run.py`` in a subprocess, for a fixed wall-clock budget (``trainer.max_time``; the
   corpus preparation, tokenizer and token cache come first and are reused from
   ``cache/`` on later runs).
2. Finetunes on ../shared/data/klue-ner split-train (3,992 sentences) and evaluates on
   split-dev (519) for {pretrained, random init} x {CRF, softmax}: the same
   architecture, tokenizer, seed, hyper-parameters and number of optimizer steps; only
   the encoder's starting weights and the head differ. Each run has a wall-clock cap
   too, so the whole script stays under 10 minutes on two CPU cores even when the
   machine is busy; the table says how many steps each run actually made.

Everything is logged to the project's MLflow store (experiments bert-lm-pretraining and
bert-lm-klue-ner) and written under outputs/bench/ner_experiment/<timestamp>/.
Prints a table of entity and character macro F1, then last
``entity_macro_f1_pretrained_crf: <x>`` (Mecab-aware tokenizer). Not part of the test suite.

    python bench/ner_experiment.py --compare-tokenizers   # ~11-12 minutes

adds the same pretraining with plain WordPiece (``tokenizer=wordpiece``) and its
pretrained and random-init CRF rows.

    python bench/ner_experiment.py --encoder DIR [--encoder DIR ...]

adds a CRF row per local HF encoder directory (a published BERT / RoBERTa / ELECTRA
checkpoint with its own tokenizer, or our export), finetuned with exactly the same
settings and steps (about 80 s each on top of the default run).
``python bench/make_hf_random_encoder.py OUT`` writes a transformers-initialised random
BERT of our ``small`` size with this experiment's tokenizer: its row should match the
random-init row within noise, which shows the harness treats an outside checkpoint as
its own.

These budgets are minutes of CPU, not the days of GPU a useful Korean BERT needs: the
pretrained encoder has seen a few hundred thousand tokens, so expect low F1 overall and
only a small gap between the rows. It is a check that the pipeline measures what it
should, not a result about Korean BERT.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
PETITIONS_DIR = SHARED_DATA / "korean_petitions"
KLUE_NER_DIR = SHARED_DATA / "klue-ner"
KLUE_NER_FILES = ("klue-ner-v1.1_split-train.tsv", "klue-ner-v1.1_split-dev.tsv")

TOTAL_BUDGET_S = 570  # the script's own deadline, under the 10-minute limit
PRETRAIN_FIT_S = 170  # wall-clock of pretraining's fit (after corpus preparation)
FINETUNE_STEPS = 350  # optimizer steps per finetuning run (batch 32: ~2.8 epochs of split-train)
FINETUNE_CAP_S = 80  # wall-clock cap per finetuning run (steps may fall short on a busy machine)
FINETUNE_OVERHEAD_S = 25  # per run: tokenization, two evaluations, export, MLflow


def max_time_override(seconds: float) -> str:
    """Lightning's ``max_time`` as the "DD:HH:MM:SS" string it parses (a dict would
    reach the Trainer as a DictConfig, which it refuses)."""
    seconds = int(seconds)
    return f"+trainer.max_time='00:00:{seconds // 60:02d}:{seconds % 60:02d}'"


PRETRAIN_OVERRIDES = [
    "data=petitions",
    f"data.root={PETITIONS_DIR}",
    "model=small",
    "train.train_nsp=false",
    "data.batch_size=32",
    "train.lr=5e-4",
    # Stopped by time, not steps: a constant rate after warmup (a linear decay over a
    # max_steps the run never reaches would leave it high anyway).
    "train.scheduler=constant",
    "train.warmup_steps=20",
    "trainer.max_steps=100000",
    max_time_override(PRETRAIN_FIT_S),
    "trainer.limit_val_batches=5",
    "trainer.enable_progress_bar=false",
]
FINETUNE_SETTINGS = [
    "task.batch_size=32",
    "finetune.encoder_lr=1e-4",
    "finetune.head_lr=1e-3",
    f"trainer.max_steps={FINETUNE_STEPS}",
    "trainer.max_epochs=-1",
    "+trainer.check_val_every_n_epoch=null",
    f"trainer.val_check_interval={FINETUNE_STEPS}",
    "trainer.enable_progress_bar=false",
]
RUNS = [("pretrained", "crf"), ("random", "crf"), ("pretrained", "softmax"), ("random", "softmax")]
# --compare-tokenizers: the same recipe with plain WordPiece, CRF head (its own time budget).
COMPARE_RUNS = [("pretrained", "crf"), ("random", "crf")]
COMPARE_BUDGET_S = 360


def pretrain(out_dir: Path, tokenizer: str) -> tuple[Path, dict]:
    command = [
        sys.executable,
        "run.py",
        *PRETRAIN_OVERRIDES,
        f"tokenizer={tokenizer}",
        f"hydra.run.dir={out_dir}",
        f"logger.run_name=bench-ner-experiment-pretrain-{tokenizer}",
    ]
    started = time.monotonic()
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"pretraining failed:\n{result.stderr[-3000:]}")
    run_dir = Path(re.search(r"^run_dir: (.+)$", result.stdout, re.M).group(1))
    import torch

    state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    table = dict(re.findall(r"│\s+(val/\w+)\s+│\s+([\d.]+)\s+│", result.stdout))
    stats = {
        "steps": int(state["global_step"]),
        "wall_s": time.monotonic() - started,
        "val_mlm_loss": float(table.get("val/mlm_loss", "nan")),
        "val_mlm_acc": float(table.get("val/mlm_acc", "nan")),
    }
    return run_dir, stats


def finetune_run(pretrained_dir: Path, init: str, head: str, out_dir: Path, cap_s: float, tokenizer: str) -> dict:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from bert_lm.config.hydra_setup import CONFIG_DIR
    from finetune.job_setup import setup_finetune_hydra
    from finetune.ner.run import finetune

    overrides = [
        f"pretrained={pretrained_dir}",
        f"finetune.init={init}",
        f"finetune.head={head}",
        f"task.data_dir={KLUE_NER_DIR}",
        *FINETUNE_SETTINGS,
        max_time_override(cap_s),
        f"paths.output_dir={out_dir}",
        f"logger.run_name=bench-ner-experiment-{tokenizer}-{init}-{head}",
    ]
    setup_finetune_hydra()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="finetune", overrides=overrides)
    started = time.monotonic()
    run_dir, scores = finetune(cfg, overrides)
    report = json.loads((run_dir / "ner_report.json").read_text())
    return {**scores, "steps": report["trained_steps"], "wall_s": time.monotonic() - started}


def run_rows(tokenizer: str, runs, out_root: Path, budget_s: float, results: dict) -> Path:
    """Pretrain with ``tokenizer``, then finetune each (init, head) of ``runs`` within ``budget_s``;
    returns the pretraining run directory."""
    started = time.monotonic()
    pretrained_dir, pre = pretrain(out_root / f"pretrain-{tokenizer}", tokenizer)
    print(
        f"pretraining ({tokenizer}): {pre['steps']} steps of 32 x 128 in {pre['wall_s']:.0f} s (fit capped at "
        f"{PRETRAIN_FIT_S} s); val/mlm_loss {pre['val_mlm_loss']:.3f}, val/mlm_acc {pre['val_mlm_acc']:.3f}",
        flush=True,
    )
    for i, (init, head) in enumerate(runs):
        remaining = budget_s - (time.monotonic() - started)
        cap = min(FINETUNE_CAP_S, remaining / (len(runs) - i) - FINETUNE_OVERHEAD_S)
        if cap < 10:
            sys.exit(f"out of time budget before {tokenizer}/{init}/{head} ({remaining:.0f} s left)")
        out_dir = out_root / f"finetune-{tokenizer}-{init}-{head}"
        r = results[tokenizer, init, head] = finetune_run(pretrained_dir, init, head, out_dir, cap, tokenizer)
        print(
            f"finetune {tokenizer}/{init}/{head}: {r['steps']} steps, entity macro F1 {r['entity_macro_f1']:.4f} "
            f"({r['wall_s']:.0f} s)",
            flush=True,
        )
    return pretrained_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--compare-tokenizers",
        action="store_true",
        help=f"also pretrain with plain WordPiece and finetune it with the CRF head (+{COMPARE_BUDGET_S} s)",
    )
    parser.add_argument(
        "--encoder",
        action="append",
        default=[],
        metavar="DIR",
        help="a local HF encoder directory (with its tokenizer) to finetune beside ours; repeatable",
    )
    args = parser.parse_args()
    for directory in args.encoder:
        if not (Path(directory) / "config.json").is_file():
            parser.error(f"--encoder {directory}: no config.json there (expected a local HF model directory)")
    missing = [p for p in (PETITIONS_DIR, *(KLUE_NER_DIR / name for name in KLUE_NER_FILES)) if not p.exists()]
    if missing:
        print(f"skipped: {', '.join(map(str, missing))} absent; this experiment needs the real data in ../shared/data")
        return
    started = time.monotonic()
    out_root = REPO_ROOT / "outputs" / "bench" / "ner_experiment" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    print(f"{os.cpu_count()} cpus, load average {os.getloadavg()[0]:.1f}; outputs in {out_root}", flush=True)

    results: dict[tuple[str, str, str], dict] = {}
    run_rows("mecab_wordpiece", RUNS, out_root, TOTAL_BUDGET_S, results)
    if args.compare_tokenizers:
        run_rows("wordpiece", COMPARE_RUNS, out_root, COMPARE_BUDGET_S, results)
    for directory in args.encoder:
        name = Path(directory).resolve().name
        out_dir = out_root / f"finetune-{name}-crf"
        r = results[name, "pretrained", "crf"] = finetune_run(
            Path(directory).resolve(), "pretrained", "crf", out_dir, FINETUNE_CAP_S, name
        )
        print(f"finetune {name}/crf: {r['steps']} steps, entity macro F1 {r['entity_macro_f1']:.4f}", flush=True)

    print()
    print("| tokenizer | encoder | head | steps | entity macro F1 | char macro F1 | entity micro F1 | wall s |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for (tokenizer, init, head), r in results.items():
        print(
            f"| {tokenizer} | {init} | {head} | {r['steps']} | {r['entity_macro_f1']:.4f} | {r['char_macro_f1']:.4f} | "
            f"{r['entity_micro_f1']:.4f} | {r['wall_s']:.0f} |"
        )
    print(f"\ntotal wall time {time.monotonic() - started:.0f} s, load average now {os.getloadavg()[0]:.1f}")
    print(f"entity_macro_f1_pretrained_crf: {results['mecab_wordpiece', 'pretrained', 'crf']['entity_macro_f1']:.4f}")


if __name__ == "__main__":
    main()

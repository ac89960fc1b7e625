"""ELECTRA against MLM: same corpus, tokenizer, discriminator size and training time.

    python bench/electra_vs_mlm.py

Pretrains ``model=small`` on ../shared/data/korean_petitions twice for the same
``train.budget_minutes`` (training batches only): once with MLM (no NSP) and once with
``train.objective=electra`` (generator 1/4 of the width, disc_weight 50). Both encoders
(for ELECTRA, the discriminator) are then finetuned with identical settings on KLUE NER
split-train (scored on split-dev, CRF head) and on Korean HateSpeech khs-split-train
(scored on khs-split-dev), one evaluation at the end of each. Prints both rows, then
``electra_gain_entity_f1: <x>`` last (ELECTRA minus MLM, entity macro F1).
Not part of the tests.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import classification_experiment  # noqa: E402
import ner_experiment  # noqa: E402

PETITIONS = REPO_ROOT.parent / "shared" / "data" / "korean_petitions"
BUDGET_MINUTES = 2.0
NER_STEPS, HATE_STEPS = 250, 150
OBJECTIVES = {
    "mlm": ["train.train_nsp=false"],
    "electra": ["train.objective=electra", "model.generator_size=0.25"],
}


def pretrain(name: str, extra: list[str], out_dir: Path) -> Path:
    command = [
        sys.executable, "run.py", "data=petitions", f"data.root={PETITIONS}", "model=small", "data.batch_size=32",
        "train.lr=5e-4", "train.warmup_ratio=0.05", f"train.budget_minutes={BUDGET_MINUTES}",
        "trainer.limit_val_batches=5", "trainer.enable_progress_bar=false", *extra,
        f"hydra.run.dir={out_dir}", f"logger.run_name=bench-electra-vs-mlm-{name}",
    ]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"pretraining ({name}) failed:\n{result.stderr[-3000:]}")
    return Path(re.search(r"^run_dir: (.+)$", result.stdout, re.M).group(1))


def main() -> None:
    needed = [PETITIONS, ner_experiment.KLUE_NER_DIR, classification_experiment.TRAIN, classification_experiment.DEV]
    missing = [p for p in needed if not p.exists()]
    if missing:
        print(f"skipped: {', '.join(map(str, missing))} absent; this benchmark needs ../shared/data")
        return
    started = time.monotonic()
    out_root = REPO_ROOT / "outputs" / "bench" / "electra_vs_mlm" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    print(f"{os.cpu_count()} cpus, load average {os.getloadavg()[0]:.1f}; outputs in {out_root}", flush=True)
    ner_experiment.FINETUNE_SETTINGS[:] = [
        s.replace(str(ner_experiment.FINETUNE_STEPS), str(NER_STEPS)) for s in ner_experiment.FINETUNE_SETTINGS
    ]
    rows = {}
    for name, extra in OBJECTIVES.items():
        run_dir = pretrain(name, extra, out_root / f"pretrain-{name}")
        ner = ner_experiment.finetune_run(run_dir, "pretrained", "crf", out_root / f"ner-{name}", 90, name)
        hate = classification_experiment.finetune_run(
            run_dir, "pretrained", classification_experiment.TRAIN, None, HATE_STEPS, out_root / f"hate-{name}"
        )
        rows[name] = (ner, hate)
        print(f"{name}: entity macro F1 {ner['entity_macro_f1']:.4f}, hate macro F1 {hate['macro_f1']:.4f}", flush=True)
    print("\n| objective | NER steps | entity macro F1 | char macro F1 | hate steps | hate macro F1 | hate accuracy |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, (ner, hate) in rows.items():
        print(f"| {name} | {ner['steps']} | {ner['entity_macro_f1']:.4f} | {ner['char_macro_f1']:.4f} | "
              f"{hate['steps']} | {hate['macro_f1']:.4f} | {hate['accuracy']:.4f} |")
    print(f"total wall time {time.monotonic() - started:.0f} s, load average now {os.getloadavg()[0]:.1f}")
    gain = rows["electra"][0]["entity_macro_f1"] - rows["mlm"][0]["entity_macro_f1"]
    print(f"electra_gain_entity_f1: {gain:+.4f}")


if __name__ == "__main__":
    main()

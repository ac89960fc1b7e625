#!/usr/bin/env bash
# GPU smoke test of the scale-out path, on a CUDA machine only:
# model=base, bf16, DeepSpeed ZeRO-2, a few hundred steps on the petitions corpus
# (or the bundled sample), then checkpoint conversion, HF export and load.
# Prints tokens/s and MFU (model FLOP/s over the GPU's peak bf16 FLOP/s, PEAK_TFLOPS).
#
#   bash bench/gpu_smoke.sh            # STEPS=300 PEAK_TFLOPS=989 (H100 SXM dense bf16) by default
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'bench/gpu_smoke.sh needs a CUDA GPU')"

STEPS="${STEPS:-300}"
PEAK_TFLOPS="${PEAK_TFLOPS:-989}"
DATA="${DATA:-petitions}"
OUT="$(mktemp -d)"
log="$OUT/run.log"

# data=petitions reads data/korean_petitions in the project unless DATA_ROOT says otherwise.
python run.py model=base data="$DATA" ${DATA_ROOT:+data.root="$DATA_ROOT"} strategy=deepspeed_stage_2 impl.precision=bf16-mixed \
  trainer.max_steps="$STEPS" trainer.val_check_interval=1.0 trainer.log_every_n_steps=10 \
  data.batch_size=64 impl.num_workers=4 impl.pad_to_multiple_of=8 \
  paths.cache_dir="$OUT/cache" logger.tracking_uri="sqlite:///$OUT/mlflow.db" \
  logger.artifact_location="$OUT/artifacts" hydra.run.dir="$OUT/run" 2>&1 | tee "$log"

run_dir="$(grep '^run_dir: ' "$log" | tail -1 | cut -d' ' -f2)"
python - "$run_dir" "$OUT/mlflow.db" "$PEAK_TFLOPS" <<'PY'
import sys
from pathlib import Path

import torch
from mlflow.tracking import MlflowClient
from transformers import BertForPreTraining

from bert_lm.training.run_support import load_pretraining_weights

run_dir, db, peak = Path(sys.argv[1]), sys.argv[2], float(sys.argv[3])
# The DeepSpeed checkpoint is a directory: loading converts it to one fp32 file.
model = load_pretraining_weights(run_dir / "checkpoints" / "last.ckpt")
hf = BertForPreTraining.from_pretrained(run_dir / "hf_export")
print("converted checkpoint and HF export load:", sum(p.numel() for p in hf.parameters()), "parameters")

client = MlflowClient(f"sqlite:///{db}")
run = client.search_runs([client.get_experiment_by_name("bert-lm-pretraining").experiment_id])[0]
tokens_per_s = [m.value for m in client.get_metric_history(run.info.run_id, "train/device/items_per_sec")]
tokens_per_s = sorted(tokens_per_s)[len(tokens_per_s) // 2]
cfg = model.config
# Training FLOPs per token: 6 x parameters (forward + backward) + attention scores.
n_params = sum(p.numel() for p in model.parameters())
flops_per_token = 6 * n_params + 12 * cfg.num_hidden_layers * cfg.hidden_size * 128
mfu = tokens_per_s * flops_per_token / (peak * 1e12)
print(f"tokens_per_s: {tokens_per_s:.0f}")
print(f"mfu: {mfu:.3f}")
PY

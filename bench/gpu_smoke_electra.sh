#!/usr/bin/env bash
# GPU smoke test of ELECTRA pretraining on a CUDA machine only: model=base discriminator
# (generator 1/3 of its width), bf16, DeepSpeed ZeRO-2, a few hundred steps, then both
# exports loaded in transformers (ElectraForPreTraining, ElectraForMaskedLM) and tokens/s.
#
#   bash bench/gpu_smoke_electra.sh        # STEPS=300, DATA=sample (DATA=petitions DATA_ROOT=...)
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'bench/gpu_smoke_electra.sh needs a CUDA GPU')"

STEPS="${STEPS:-300}"
DATA="${DATA:-sample}"
OUT="$(mktemp -d)"
log="$OUT/run.log"

python run.py model=base train.objective=electra model.generator_size=0.333 model.embedding_size=768 \
  data="$DATA" ${DATA_ROOT:+data.root="$DATA_ROOT"} strategy=deepspeed_stage_2 impl.precision=bf16-mixed \
  trainer.max_steps="$STEPS" trainer.val_check_interval=1.0 trainer.log_every_n_steps=10 \
  data.batch_size=64 impl.num_workers=4 impl.pad_to_multiple_of=8 \
  paths.cache_dir="$OUT/cache" logger.tracking_uri="sqlite:///$OUT/mlflow.db" \
  logger.artifact_location="$OUT/artifacts" hydra.run.dir="$OUT/run" 2>&1 | tee "$log"

run_dir="$(grep '^run_dir: ' "$log" | tail -1 | cut -d' ' -f2)"
python - "$run_dir" "$OUT/mlflow.db" <<'PY'
import sys
from pathlib import Path

from mlflow.tracking import MlflowClient
from transformers import ElectraForMaskedLM, ElectraForPreTraining

run_dir, db = Path(sys.argv[1]), sys.argv[2]
disc = ElectraForPreTraining.from_pretrained(run_dir / "hf_export" / "discriminator")
gen = ElectraForMaskedLM.from_pretrained(run_dir / "hf_export" / "generator")
print("exports load:", sum(p.numel() for p in disc.parameters()), "discriminator and",
      sum(p.numel() for p in gen.parameters()), "generator parameters")
client = MlflowClient(f"sqlite:///{db}")
run = client.search_runs([client.get_experiment_by_name("bert-lm-pretraining").experiment_id])[0]
history = sorted(m.value for m in client.get_metric_history(run.info.run_id, "train/device/items_per_sec"))
print("val/disc_acc:", run.data.metrics.get("val/disc_acc"), "val/mlm_acc:", run.data.metrics.get("val/mlm_acc"))
print(f"tokens_per_s: {history[len(history) // 2]:.0f}" if history else "tokens_per_s: n/a")
PY

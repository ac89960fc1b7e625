"""Pretrain a Korean BERT from scratch, configured by Hydra (conf/config.yaml).

    python run.py model=small train.train_nsp=false

Prepares the corpus and trains the tokenizer when their outputs are missing,
then fits, validates, exports to HF format and logs everything to MLflow. The
last two lines printed are ``run_dir: <path>`` and ``hf_export: <path>``.
"""

from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from pytorch_lightning.utilities import rank_zero_only

from bert_lm.config.hydra_setup import (
    CONFIG_DIR,
    argv_for_ddp_worker,
    check_overrides,
    export_job_for_ddp_workers,
    isolated_job_environment,
    setup_hydra,
)
from bert_lm.training.pretraining_run import pretrain
from bert_lm.training.run_support import user_errors_reported

setup_hydra()


@hydra.main(config_path=str(CONFIG_DIR), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    overrides = list(HydraConfig.get().overrides.task)
    with isolated_job_environment(), user_errors_reported():
        export_job_for_ddp_workers(overrides, cfg.paths.output_dir)
        run_dir, hf_dir = pretrain(cfg, overrides)
    if rank_zero_only.rank == 0:  # under DDP every rank returns here; the user wants the lines once
        print(f"run_dir: {run_dir}")
        print(f"hf_export: {hf_dir}")


if __name__ == "__main__":
    sys.argv = argv_for_ddp_worker(sys.argv)  # see its docstring: sweeps + DDP
    check_overrides(sys.argv[1:])
    main()

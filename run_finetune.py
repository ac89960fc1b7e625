"""Finetune a pretrained Korean BERT on KLUE NER, configured by Hydra (conf/finetune.yaml).

    python run_finetune.py pretrained=<run_dir printed by run.py>
    python run_finetune.py pretrained=<run dir> task.data_dir=/path/to/klue-ner finetune.head=softmax

With no arguments it finetunes a randomly initialised small encoder on the bundled
KLUE-format sample (offline, about a minute on 2 CPU cores): the no-pretraining
baseline, see finetune/ner_run.py. Logs to MLflow (experiment bert-lm-klue-ner),
writes the per-type report, the confusion matrix and ner_export/ (for
``python -m finetune.predict <run_dir> "문장"``) into the run directory. The last
three lines printed are ``entity_macro_f1: <x>``, ``char_macro_f1: <x>`` (on the
evaluation split) and ``run_dir: <path>``.
"""

from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from bert_lm.config.hydra_setup import CONFIG_DIR
from finetune.ner_run import CONFIG_NAME, check_finetune_overrides, finetune, setup_finetune_hydra

setup_finetune_hydra()


@hydra.main(config_path=str(CONFIG_DIR), config_name=CONFIG_NAME, version_base="1.3")
def main(cfg: DictConfig) -> None:
    run_dir, scores = finetune(cfg, list(HydraConfig.get().overrides.task))
    print(f"entity_macro_f1: {scores['entity_macro_f1']:.4f}")
    print(f"char_macro_f1: {scores['char_macro_f1']:.4f}")
    print(f"run_dir: {run_dir}")


if __name__ == "__main__":
    check_finetune_overrides(sys.argv[1:])
    main()

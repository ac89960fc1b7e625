"""Finetune a pretrained Korean encoder on a task, configured by Hydra (conf/finetune.yaml).

    python run_finetune.py pretrained=<run_dir printed by run.py>
    python run_finetune.py pretrained=<run dir> task.data_dir=/path/to/klue-ner finetune.head=softmax
    python run_finetune.py task=hate_speech pretrained=<run dir>      # or nsmc, klue_nli, classification

Classification tasks print ``run_dir``, the test-file scores when ``task.test_file`` is
set, then ``macro_f1: <x>`` and ``accuracy: <x>`` (on the evaluation file) last; see
finetune/classification/run.py. KLUE NER:

With no arguments it finetunes a randomly initialised small encoder on the bundled
KLUE-format sample (offline, about a minute on 2 CPU cores): the no-pretraining
baseline, see finetune/ner/run.py. Logs to MLflow (experiment bert-lm-klue-ner),
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
from bert_lm.training.run_support import user_errors_reported
from finetune.job_setup import CONFIG_NAME, check_finetune_overrides, setup_finetune_hydra
from finetune.ner.run import finetune

setup_finetune_hydra()


@hydra.main(config_path=str(CONFIG_DIR), config_name=CONFIG_NAME, version_base="1.3")
def main(cfg: DictConfig) -> None:
    overrides = list(HydraConfig.get().overrides.task)
    if cfg.task.kind == "classification":
        from finetune.classification.run import finetune_classification

        with user_errors_reported():
            run_dir, scores = finetune_classification(cfg, overrides)
        print(f"run_dir: {run_dir}")
        for name in ("test_macro_f1", "test_accuracy"):
            if name in scores:
                print(f"{name}: {scores[name]:.4f}")
        # Selected on the evaluation file: a best-of-epochs figure on that file, not a test score.
        print(f"macro_f1: {scores['macro_f1']:.4f}")
        print(f"accuracy: {scores['accuracy']:.4f}")
        return
    with user_errors_reported():
        run_dir, scores = finetune(cfg, overrides)
    for name in ("test_entity_macro_f1", "test_char_macro_f1"):
        if name in scores:
            print(f"{name}: {scores[name]:.4f}")
    print(f"entity_macro_f1: {scores['entity_macro_f1']:.4f}")
    print(f"char_macro_f1: {scores['char_macro_f1']:.4f}")
    print(f"run_dir: {run_dir}")


if __name__ == "__main__":
    check_finetune_overrides(sys.argv[1:])
    main()

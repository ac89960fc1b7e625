"""Pretrain a Korean BERT: prepare corpus -> tokenizer -> (data -> model -> fit).

    python run.py model=small train.train_nsp=false
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from bert_lm.corpus_pipeline import ensure_prepared_corpus, ensure_tokenizer
from bert_lm.hydra_setup import CONFIG_DIR, check_overrides, setup_hydra

setup_hydra()


@hydra.main(config_path=str(CONFIG_DIR), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    prepared_dir = ensure_prepared_corpus(cfg.data, cfg.paths.cache_dir)
    tokenizer_dir = ensure_tokenizer(cfg.tokenizer, prepared_dir, cfg.paths.cache_dir)
    print(f"prepared_corpus: {prepared_dir}")
    print(f"tokenizer: {tokenizer_dir}")


if __name__ == "__main__":
    check_overrides(sys.argv[1:])
    main()

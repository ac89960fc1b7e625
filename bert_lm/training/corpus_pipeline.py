"""The steps before training, driven by the Hydra config: prepared corpus, tokenizer.

Each step reuses its output when it already exists for the same inputs and
settings (content-hash keyed directories under ``paths.cache_dir``), so
``run.py`` runs them only when their output is missing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from bert_lm.corpus.cleaning import CleaningConfig
from bert_lm.corpus.petitions_download import download_petitions
from bert_lm.corpus.prepare import (
    TRAIN_FILE,
    PrepareSettings,
    format_stats,
    is_prepared,
    load_stats,
    prepare_corpus,
    prepared_dir_for,
)
from bert_lm.tokenizer.korean_tokenizer import KoreanTokenizer
from bert_lm.tokenizer.loading import load_tokenizer

log = logging.getLogger(__name__)


def prepare_settings(data_cfg: DictConfig) -> tuple[PrepareSettings, CleaningConfig]:
    names = PrepareSettings.__dataclass_fields__
    settings = PrepareSettings(**{k: data_cfg[k] for k in names})
    cleaning = CleaningConfig(**OmegaConf.to_container(data_cfg.cleaning, resolve=True))
    return settings, cleaning


def ensure_prepared_corpus(data_cfg: DictConfig, cache_dir: str | Path, show_progress: bool = True) -> Path:
    """The prepared corpus directory for ``data_cfg``, built if missing."""
    root = Path(data_cfg.root)
    if data_cfg.download and not root.exists():
        download_petitions(root, tuple(data_cfg.download_months))
    settings, cleaning = prepare_settings(data_cfg)
    out_dir = prepared_dir_for(settings, cleaning, Path(cache_dir) / "prepared")
    if is_prepared(out_dir):
        log.info("reusing prepared corpus %s", out_dir)
        print(format_stats(load_stats(out_dir)))
    else:
        stats = prepare_corpus(settings, cleaning, out_dir, show_progress=show_progress)
        print(format_stats(stats))
    return out_dir


def _tokenizer_key(tokenizer_cfg: DictConfig, prepared_dir: Path) -> str:
    settings = {k: tokenizer_cfg[k] for k in ("mecab", "vocab_size", "min_frequency", "limit_alphabet")}
    key = json.dumps({"corpus": prepared_dir.name, "settings": settings}, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def ensure_tokenizer(
    tokenizer_cfg: DictConfig, prepared_dir: Path, cache_dir: str | Path, show_progress: bool = True
) -> Path:
    """A saved tokenizer directory: ``tokenizer.dir`` if set, else trained on the
    prepared train split (once per corpus and settings)."""
    if tokenizer_cfg.dir:
        load_tokenizer(tokenizer_cfg.dir).close()  # fail now, with the loader's message, if unusable
        return Path(tokenizer_cfg.dir)
    kind = "mecab-wordpiece" if tokenizer_cfg.mecab else "wordpiece"
    out_dir = Path(cache_dir) / "tokenizers" / f"{kind}-{_tokenizer_key(tokenizer_cfg, prepared_dir)}"
    if (out_dir / "tokenizer.json").is_file():
        log.info("reusing tokenizer %s", out_dir)
        return out_dir
    train_file = prepared_dir / TRAIN_FILE
    num_lines = sum(1 for _ in open(train_file, encoding="utf-8"))
    with open(train_file, encoding="utf-8") as lines:
        tokenizer = KoreanTokenizer.train(
            (line.rstrip("\n") for line in lines),
            mecab=tokenizer_cfg.mecab,
            vocab_size=tokenizer_cfg.vocab_size,
            min_frequency=tokenizer_cfg.min_frequency,
            limit_alphabet=tokenizer_cfg.limit_alphabet,
            num_lines=num_lines,
            show_progress=show_progress,
        )
    tmp_dir = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp_dir, ignore_errors=True)
    tokenizer.save(tmp_dir)
    tmp_dir.rename(out_dir)
    print(f"tokenizer: {out_dir} (vocab {tokenizer.vocab_size}, {'mecab' if tokenizer.mecab else 'plain'} WordPiece)")
    return out_dir

"""The steps before training, driven by the Hydra config: prepared corpus, tokenizer.

Each step reuses its output when it already exists for the same inputs and
settings (content-hash keyed directories under ``paths.cache_dir``), so
``run.py`` runs them only when their output is missing.

Several processes may share one cache directory and start together: a Hydra multirun
with a parallel launcher, jobs of a team, every node of a multi-node job on a shared
filesystem. Each step holds a lock (``.<name>.lock`` beside its output, see
:func:`bert_lm.corpus.prepare.build_lock`) from "is it there?" to "published", so one
process builds and the others wait and then reuse its output. That matters most for the
tokenizer: WordPiece training is not bit-for-bit repeatable, so a second training would
give a different vocabulary for the same key. Lock files stay beside the outputs (empty,
harmless, safe to delete when no run is active); on a shared filesystem they need working
``flock`` (NFSv4, Lustre mounted with ``-o flock``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from bert_lm.corpus.cleaning import CleaningConfig
from bert_lm.corpus.petitions_download import download_petitions
from bert_lm.corpus.prepare import (
    TRAIN_FILE,
    PrepareSettings,
    build_lock,
    format_stats,
    is_prepared,
    load_stats,
    prepare_corpus,
    prepared_dir_for,
    private_temporary,
    publish_directory,
)
from bert_lm.tokenizer.korean_tokenizer import SETTINGS_FILE, TOKENIZER_FILE, KoreanTokenizer
from bert_lm.tokenizer.loading import load_tokenizer

log = logging.getLogger(__name__)


def prepare_settings(data_cfg: DictConfig) -> tuple[PrepareSettings, CleaningConfig]:
    names = PrepareSettings.__dataclass_fields__
    settings = PrepareSettings(**{k: data_cfg[k] for k in names})
    cleaning = CleaningConfig(**OmegaConf.to_container(data_cfg.cleaning, resolve=True))
    return settings, cleaning


def _missing_months(root: Path, months: list[str]) -> list[str]:
    return [month for month in months if not (root / f"petitions_{month}").is_file()]


def ensure_corpus_files(data_cfg: DictConfig) -> None:
    """With ``data.download=true``, fetch the months of the petitions archive missing from
    ``data.root`` (one process at a time); without it, a missing petitions root fails here,
    naming ``data.root`` and the download option."""
    root = Path(data_cfg.root).expanduser()
    if data_cfg.source != "petitions":
        return
    if not data_cfg.download:
        if not root.exists():
            raise FileNotFoundError(
                f"data.root={root} does not exist: point data.root at a directory holding the petitions_YYYY-MM "
                "files, or add data.download=true to fetch the public archive into it (needs a network)"
            )
        return
    months = list(data_cfg.download_months)
    if not _missing_months(root, months):
        return
    with build_lock(root, "the petitions download"):
        missing = _missing_months(root, months)  # another process may have fetched them meanwhile
        if missing:
            download_petitions(root, tuple(missing))


def ensure_prepared_corpus(
    data_cfg: DictConfig, cache_dir: str | Path, show_progress: bool = True, require_valid_split: bool = True
) -> Path:
    """The prepared corpus directory for ``data_cfg``, built if missing (by one process at a time).
    ``require_valid_split=False`` for evaluation, which prepares a whole corpus as one split."""
    if require_valid_split and data_cfg.valid_ratio <= 0:
        # The validation split drives the checkpoints (ModelCheckpoint monitors val/mlm_loss).
        raise ValueError(
            f"data.valid_ratio={data_cfg.valid_ratio}: pretraining needs a validation split (the checkpoints "
            "are chosen by val/mlm_loss); set data.valid_ratio above 0, e.g. data.valid_ratio=0.05"
        )
    ensure_corpus_files(data_cfg)
    settings, cleaning = prepare_settings(data_cfg)
    out_dir = prepared_dir_for(settings, cleaning, Path(cache_dir) / "prepared")
    if not is_prepared(out_dir):
        with build_lock(out_dir, "the prepared corpus"):
            if not is_prepared(out_dir):  # not published by another process while this one waited
                stats = prepare_corpus(settings, cleaning, out_dir, show_progress=show_progress)
                print(format_stats(stats))
                return out_dir
    log.info("reusing prepared corpus %s", out_dir)
    print(format_stats(load_stats(out_dir)))
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
    if not _is_saved_tokenizer(out_dir):
        with build_lock(out_dir, "the tokenizer"):
            # Another process may have published it while this one waited: then use that one,
            # never train a second (WordPiece training is not bit-for-bit repeatable).
            if not _is_saved_tokenizer(out_dir):
                _train_and_publish(tokenizer_cfg, prepared_dir, out_dir, show_progress)
                return out_dir
    log.info("reusing tokenizer %s", out_dir)
    return out_dir


def _is_saved_tokenizer(directory: Path) -> bool:
    return all((directory / name).is_file() for name in (TOKENIZER_FILE, SETTINGS_FILE))


def _train_and_publish(tokenizer_cfg: DictConfig, prepared_dir: Path, out_dir: Path, show_progress: bool) -> None:
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
    tmp_dir = private_temporary(out_dir)
    try:
        tokenizer.save(tmp_dir)
        published = publish_directory(tmp_dir, out_dir, _is_saved_tokenizer)
    finally:
        tokenizer.close()
    if not published:  # one built without the lock got there first: use it, not ours
        tokenizer = load_tokenizer(out_dir)
        tokenizer.close()
    print(f"tokenizer: {out_dir} (vocab {tokenizer.vocab_size}, {'mecab' if tokenizer.mecab else 'plain'} WordPiece)")

"""Open any tokenizer directory: ours (KoreanTokenizer) or a published checkpoint's own."""

from __future__ import annotations

import os
from pathlib import Path

from bert_lm.tokenizer.korean_tokenizer import SETTINGS_FILE, KoreanTokenizer
from bert_lm.tokenizer.shipped import TOKENIZER_JSON, VOCAB_TXT, ShippedTokenizer

# What marks a directory as a tokenizer, in the order it is checked. Our settings file
# comes first: KoreanTokenizer.save also writes tokenizer.json and vocab.txt, but only
# KoreanTokenizer reproduces its Mecab step.
LOOKED_FOR = (SETTINGS_FILE, TOKENIZER_JSON, VOCAB_TXT)


def is_tokenizer_dir(directory: str | os.PathLike) -> bool:
    """True when :func:`load_tokenizer` can open ``directory``."""
    directory = Path(directory)
    return directory.is_dir() and any((directory / name).is_file() for name in LOOKED_FOR)


def load_tokenizer(directory: str | os.PathLike, num_workers: int | None = None) -> KoreanTokenizer | ShippedTokenizer:
    """Our tokenizer when ``directory`` holds ``bert_lm_tokenizer.json``, else the checkpoint's shipped one."""
    directory = Path(directory)
    if (directory / SETTINGS_FILE).is_file():
        return KoreanTokenizer.load(directory, num_workers=num_workers)
    if (directory / TOKENIZER_JSON).is_file() or (directory / VOCAB_TXT).is_file():
        return ShippedTokenizer.load(directory, num_workers=num_workers)
    what = "does not exist" if not directory.exists() else "holds none of " + ", ".join(LOOKED_FOR)
    raise FileNotFoundError(
        f"no tokenizer in {directory}: it {what}. Point at a directory saved by KoreanTokenizer.save "
        f"({SETTINGS_FILE}) or at a checkpoint that ships {TOKENIZER_JSON} or {VOCAB_TXT}."
    )

"""Shared fixtures: paths, the real data in ../shared (skipped when absent), and
small tokenizers trained once per session on the bundled sample."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
SAMPLE_CORPUS = REPO_ROOT / "bert_lm" / "sample" / "korean_sample.txt"


def shared_data_path(*parts: str) -> Path:
    """A path under ../shared/data, or skip the test with the reason."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent: this test needs the real data in ../shared/data")
    return path


def _sample_lines() -> list[str]:
    return [line for line in SAMPLE_CORPUS.read_text(encoding="utf-8").splitlines() if line and line != "[EOD]"]


@pytest.fixture(scope="session")
def sample_lines() -> list[str]:
    return _sample_lines()


@pytest.fixture(scope="session")
def mecab_tokenizer():
    from bert_lm.tokenizer.korean_tokenizer import KoreanTokenizer

    return KoreanTokenizer.train(_sample_lines(), mecab=True, vocab_size=3000, min_frequency=1, show_progress=False)


@pytest.fixture(scope="session")
def plain_tokenizer():
    from bert_lm.tokenizer.korean_tokenizer import KoreanTokenizer

    return KoreanTokenizer.train(_sample_lines(), mecab=False, vocab_size=3000, min_frequency=1, show_progress=False)

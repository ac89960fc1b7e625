"""Token cache: layout, streaming, reuse and invalidation, verification, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bert_lm.data.token_cache import TokenCache, TokenCacheError, build_token_cache, token_dtype_for


class FakeTokenizer:
    """Reads ids straight from the text: "17 18 ##3" -> [17, 18, 3]; "x" tokenizes to nothing.

    Enough of the KoreanTokenizer protocol for the cache: corpora spell out the ids they
    should produce, so tests can check every token that lands in the cache.
    """

    def __init__(self, vocab_size: int = 1000, fingerprint: str = "fake-tokenizer-a"):
        self.vocab_size = vocab_size
        self._fingerprint = fingerprint
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id, self.eod_id = range(6)
        self.special_ids = list(range(6))

    def encode_ids_batch(self, texts: list[str]) -> list[list[int]]:
        return [[int(word.removeprefix("##")) for word in text.split() if word != "x"] for text in texts]

    def fingerprint(self) -> str:
        return self._fingerprint

    def continuation_mask(self) -> np.ndarray:
        return np.zeros(self.vocab_size, bool)


def write_corpus(path: Path, documents: list[list[list[int]]], separator: str = "[EOD]") -> Path:
    lines = []
    for document in documents:
        lines += [" ".join(map(str, sentence)) for sentence in document] + [separator]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def read_back(cache: TokenCache) -> list[list[list[int]]]:
    tokens = np.asarray(cache.tokens())
    sentence_offsets, document_offsets = cache.sentence_offsets(), cache.document_offsets()
    return [
        [
            tokens[sentence_offsets[s] : sentence_offsets[s + 1]].tolist()
            for s in range(document_offsets[d], document_offsets[d + 1])
        ]
        for d in range(cache.num_documents)
    ]


DOCUMENTS = [[[10, 11, 12], [13]], [[20, 21]], [[30], [31, 32], [33, 34, 35, 36]]]


def test_layout_and_round_trip(tmp_path):
    corpus = write_corpus(tmp_path / "train.txt", DOCUMENTS)
    cache = build_token_cache(corpus, FakeTokenizer(), tmp_path / "cache", progress=False)
    assert read_back(cache) == DOCUMENTS
    assert cache.token_dtype == np.uint16
    assert np.load(cache.directory / "sentence_offsets.npy", allow_pickle=False).tolist() == [0, 3, 4, 6, 7, 9, 13]
    assert np.load(cache.directory / "document_offsets.npy", allow_pickle=False).tolist() == [0, 2, 3, 6]
    meta = json.loads((cache.directory / "meta.json").read_text())
    assert meta["num_tokens"] == 13 and meta["tokenizer_fingerprint"] == "fake-tokenizer-a"


def test_blank_lines_end_documents_and_unterminated_last_document(tmp_path):
    text = "10 11\n\n\n20\n[EOD]\n[EOD]\n30\n31\n"  # repeated ends make no empty documents
    (tmp_path / "train.txt").write_text(text, encoding="utf-8")
    cache = build_token_cache(tmp_path / "train.txt", FakeTokenizer(), tmp_path / "cache", progress=False)
    assert read_back(cache) == [[[10, 11]], [[20]], [[30], [31]]]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    documents=st.lists(
        st.lists(st.lists(st.integers(6, 300), min_size=0, max_size=6), min_size=1, max_size=5), min_size=1, max_size=8
    ),
    batch_lines=st.integers(1, 5),
)
def test_streaming_batches_do_not_change_the_cache(tmp_path_factory, documents, batch_lines):
    """Any batch size (boundaries falling anywhere, even on a batch's first line) gives the
    same cache; sentences that tokenize to nothing are dropped, documents left empty vanish."""
    tmp = tmp_path_factory.mktemp("stream")
    as_text = [[sentence or ["x"] for sentence in document] for document in documents]  # "x" -> no tokens
    corpus = write_corpus(tmp / "train.txt", as_text)
    if not any(sentence for document in documents for sentence in document):
        with pytest.raises(ValueError, match="empty"):
            build_token_cache(corpus, FakeTokenizer(), tmp / "cache", batch_lines=batch_lines, progress=False)
        return
    cache = build_token_cache(corpus, FakeTokenizer(), tmp / "cache", batch_lines=batch_lines, progress=False)
    expected = [[s for s in document if s] for document in documents]
    assert read_back(cache) == [document for document in expected if document]


def test_reuse_and_invalidation(tmp_path):
    corpus = write_corpus(tmp_path / "train.txt", DOCUMENTS)
    root = tmp_path / "cache"
    first = build_token_cache(corpus, FakeTokenizer(), root, progress=False)
    again = build_token_cache(corpus, FakeTokenizer(), root, progress=False)
    assert again.directory == first.directory and again.meta["build_id"] == first.meta["build_id"]  # reused

    other_tokenizer = build_token_cache(corpus, FakeTokenizer(fingerprint="fake-tokenizer-b"), root, progress=False)
    other_setting = build_token_cache(corpus, FakeTokenizer(), root, max_sentence_tokens=2, progress=False)
    write_corpus(corpus, DOCUMENTS + [[[40, 41]]])
    other_corpus = build_token_cache(corpus, FakeTokenizer(), root, progress=False)
    directories = {c.directory for c in (first, other_tokenizer, other_setting, other_corpus)}
    assert len(directories) == 4  # each change made a new cache
    assert other_corpus.num_documents == 4
    assert not list(root.glob(".tmp-*"))  # no temporary directory left behind


def test_truncated_cache_is_detected_and_rebuilt(tmp_path):
    corpus = write_corpus(tmp_path / "train.txt", DOCUMENTS)
    cache = build_token_cache(corpus, FakeTokenizer(), tmp_path / "cache", progress=False)
    with open(cache.directory / "tokens.bin", "r+b") as f:
        f.truncate(10)
    with pytest.raises(TokenCacheError, match="truncated"):
        TokenCache.open(cache.directory)
    rebuilt = build_token_cache(corpus, FakeTokenizer(), tmp_path / "cache", progress=False)
    assert rebuilt.meta["build_id"] != cache.meta["build_id"] and read_back(rebuilt) == DOCUMENTS

    with open(rebuilt.directory / "sentence_offsets.npy", "r+b") as f:
        f.truncate(150)
    with pytest.raises(TokenCacheError, match="truncated"):
        TokenCache.open(rebuilt.directory)


def test_empty_and_missing_corpus_name_the_file(tmp_path):
    (tmp_path / "train.txt").write_text("[EOD]\n\n  \n[EOD]\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"train\.txt.*empty"):
        build_token_cache(tmp_path / "train.txt", FakeTokenizer(), tmp_path / "cache", progress=False)
    assert not list((tmp_path / "cache").iterdir())  # nothing half-built left
    with pytest.raises(FileNotFoundError, match=r"valid\.txt"):
        build_token_cache(tmp_path / "valid.txt", FakeTokenizer(), tmp_path / "cache", progress=False)


def test_corpus_of_another_tokenizer_is_refused(tmp_path):
    corpus = write_corpus(tmp_path / "train.txt", DOCUMENTS)
    cache = build_token_cache(corpus, FakeTokenizer(), tmp_path / "cache", progress=False)
    with pytest.raises(TokenCacheError, match="tokenized with tokenizer"):
        TokenCache.open(cache.directory, tokenizer_fingerprint="fake-tokenizer-b")
    with pytest.raises(TokenCacheError, match="outside the configured"):
        TokenCache.open(cache.directory, vocab_size=30)
    # A tokenizer whose ids exceed its own vocabulary cannot have made this corpus.
    with pytest.raises(TokenCacheError, match="outside its vocabulary"):
        build_token_cache(corpus, FakeTokenizer(vocab_size=20), tmp_path / "cache2", progress=False)


def test_long_sentences_are_truncated_and_counted(tmp_path):
    corpus = write_corpus(tmp_path / "train.txt", [[list(range(10, 30)), [7, 8]]])
    cache = build_token_cache(corpus, FakeTokenizer(), tmp_path / "cache", max_sentence_tokens=5, progress=False)
    assert read_back(cache) == [[[10, 11, 12, 13, 14], [7, 8]]]
    assert cache.meta["num_truncated_sentences"] == 1 and cache.meta["num_truncated_tokens"] == 15


def test_token_dtype_follows_vocabulary_size(tmp_path):
    assert token_dtype_for(65_536) == np.uint16 and token_dtype_for(65_537) == np.uint32
    corpus = write_corpus(tmp_path / "train.txt", [[[70_000, 12]]])
    cache = build_token_cache(corpus, FakeTokenizer(vocab_size=100_000), tmp_path / "cache", progress=False)
    assert cache.token_dtype == np.uint32 and read_back(cache) == [[[70_000, 12]]]


def test_real_tokenizer_on_the_sample_corpus(tmp_path, plain_tokenizer):
    from tests.conftest import SAMPLE_CORPUS

    cache = build_token_cache(SAMPLE_CORPUS, plain_tokenizer, tmp_path / "cache", progress=False)
    lines = SAMPLE_CORPUS.read_text(encoding="utf-8").splitlines()
    assert cache.num_documents == lines.count("[EOD]")
    assert cache.num_sentences == sum(1 for line in lines if line.strip() and line != "[EOD]")
    first = lines[0]
    tokens, offsets = np.asarray(cache.tokens()), cache.sentence_offsets()
    assert tokens[offsets[0] : offsets[1]].tolist() == plain_tokenizer.encode_ids_batch([first])[0]
    TokenCache.open(cache.directory, plain_tokenizer.fingerprint(), plain_tokenizer.vocab_size)

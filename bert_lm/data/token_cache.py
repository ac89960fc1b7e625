"""Tokenized corpus on disk: a flat token-id array plus sentence and document offsets.

The prepared corpus (one sentence per line, `[EOD]` or a blank line after each document)
is tokenized once into a directory that training only ever reads:

    tokens.bin              every sentence's token ids back to back, no separators;
                            uint16 when the vocabulary has at most 65,536 ids, else uint32
    sentence_offsets.npy    int64, (num_sentences + 1,): sentence i is tokens[so[i]:so[i + 1]]
    document_offsets.npy    int64, (num_documents + 1,): document d is sentences do[d]:do[d + 1]
    meta.json               counts, dtype, corpus sha256, tokenizer fingerprint, settings

This is nanoGPT's flat memmap with the offsets index of Megatron's .bin/.idx, because NSP
needs sentence and document boundaries. Offsets are .npy (np.load(mmap_mode="r"),
allow_pickle=False) and metadata JSON: nothing in a cache is pickled.

The directory is named by a hash of what decides its content (corpus bytes, tokenizer
fingerprint, `max_sentence_tokens`, format version), as cramming does, so a change to any
of them builds a new cache and an unchanged setup reuses the old one. A build writes into
a temporary directory of its own (process id and a random suffix) that is renamed into
place only when complete, and `TokenCache.open` checks every file's size against
meta.json, so a crash never leaves a cache that looks valid. Processes that share the
cache root (every node's `prepare_data` on a shared filesystem, parallel runs) build a
cache once: the first holds the lock `.<name>.lock` beside it, the others wait and reuse
its cache (see `bert_lm.corpus.prepare.build_lock`). Building streams the corpus in
batches of lines and writes as it goes: memory does not grow with the corpus.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import shutil
import struct
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import numpy as np
from tqdm import tqdm

from bert_lm.corpus.prepare import build_lock, private_temporary, publish_directory

log = logging.getLogger(__name__)

# Bump when the on-disk layout or the meaning of a field changes: old caches are then
# rebuilt instead of being misread.
CACHE_FORMAT_VERSION = 1
DOCUMENT_END_LINE = "[EOD]"
TOKENS_FILE = "tokens.bin"
SENTENCE_OFFSETS_FILE = "sentence_offsets.npy"
DOCUMENT_OFFSETS_FILE = "document_offsets.npy"
META_FILE = "meta.json"


class TokenCacheError(ValueError):
    """A cache that is missing, truncated, or was built with another tokenizer."""


class CorpusTokenizer(Protocol):
    """The part of `bert_lm.tokenizer.korean_tokenizer.KoreanTokenizer` that building a cache needs."""

    vocab_size: int

    def encode_ids_batch(self, texts: list[str]) -> list[list[int]]: ...

    def fingerprint(self) -> str: ...


def token_dtype_for(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


def file_sha256(path: str | os.PathLike, chunk_bytes: int = 1 << 22) -> str:
    """Content hash, read in chunks so a corpus of any size hashes in constant memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def token_cache_key(corpus_sha256: str, tokenizer_fingerprint: str, max_sentence_tokens: int) -> str:
    """Hash of everything that changes a cache's content; names its directory."""
    settings = {
        "format_version": CACHE_FORMAT_VERSION,
        "corpus_sha256": corpus_sha256,
        "tokenizer_fingerprint": tokenizer_fingerprint,
        "max_sentence_tokens": int(max_sentence_tokens),
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


# ---------------------------------------------------------------------------------------
# .npy files written in a stream


def _npy_header(dtype: np.dtype, length: int, header_bytes: int) -> bytes:
    """A version-1.0 .npy header padded with spaces to exactly `header_bytes`.

    Fixed-size so a file can be written before its length is known and the header
    rewritten in place at the end (np.lib.format.open_memmap needs the shape up front).
    """
    text = repr({"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (length,)})
    body_bytes = header_bytes - 10  # magic (6) + version (2) + header length (2)
    body = text.encode("latin1")
    if len(body) + 1 > body_bytes:
        raise ValueError(f"npy header for {dtype} does not fit in {header_bytes} bytes")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", body_bytes) + body.ljust(body_bytes - 1) + b"\n"


class NpyAppender:
    """Append 1-D records to an .npy file whose final length is unknown when it is opened."""

    def __init__(self, path: str | os.PathLike, dtype: np.dtype | str):
        self.path = Path(path)
        self.dtype = np.dtype(dtype)
        self.length = 0
        widest = len(_npy_header(self.dtype, 2**63 - 1, 1 << 16).rstrip())
        self._header_bytes = -(-(widest + 1) // 64) * 64  # numpy aligns headers to 64 bytes
        self._file = open(self.path, "wb")
        self._file.write(_npy_header(self.dtype, 0, self._header_bytes))

    def append(self, records: np.ndarray) -> None:
        records = np.ascontiguousarray(records, dtype=self.dtype)
        self._file.write(records.tobytes())
        self.length += len(records)

    def close(self) -> None:
        self._file.seek(0)
        self._file.write(_npy_header(self.dtype, self.length, self._header_bytes))
        self._file.close()

    def abandon(self) -> None:
        self._file.close()


# ---------------------------------------------------------------------------------------
# Writing a cache


class TokenCacheWriter:
    """Writes a cache directory from sentences given as flat token arrays.

    `build_token_cache` feeds it from text; tests and the benchmark feed it synthetic or
    replicated token arrays directly. Documents may span several `append` calls.
    """

    def __init__(self, directory: str | os.PathLike, token_dtype: np.dtype):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=False)
        self.token_dtype = np.dtype(token_dtype)
        self._tokens = open(self.directory / TOKENS_FILE, "wb")
        self._sentence_offsets = NpyAppender(self.directory / SENTENCE_OFFSETS_FILE, np.int64)
        self._document_offsets = NpyAppender(self.directory / DOCUMENT_OFFSETS_FILE, np.int64)
        self._sentence_offsets.append(np.zeros(1, np.int64))
        self._document_offsets.append(np.zeros(1, np.int64))
        self.num_tokens = 0
        self.num_sentences = 0
        self.num_documents = 0
        self.max_token_id = -1
        self._last_document_end = 0  # sentence index after which the last document closed

    def append(self, token_ids: np.ndarray, sentence_lengths: np.ndarray, ends_document: np.ndarray) -> None:
        """Add sentences. token_ids: (sum(sentence_lengths),); ends_document[i]: a document
        ends after sentence i. Zero-length sentences are not allowed (drop them first)."""
        sentence_lengths = np.asarray(sentence_lengths, np.int64)
        ends_document = np.asarray(ends_document, bool)
        if len(sentence_lengths) == 0:
            return
        if sentence_lengths.min() <= 0:
            raise ValueError("empty sentences must be dropped before they reach the cache")
        if len(token_ids) != sentence_lengths.sum() or len(ends_document) != len(sentence_lengths):
            raise ValueError("token_ids, sentence_lengths and ends_document disagree")
        self.max_token_id = max(self.max_token_id, int(token_ids.max()))
        if self.max_token_id > np.iinfo(self.token_dtype).max:
            raise TokenCacheError(f"token id {self.max_token_id} does not fit {self.token_dtype}")
        self._tokens.write(np.ascontiguousarray(token_ids, self.token_dtype).tobytes())
        self._sentence_offsets.append(self.num_tokens + np.cumsum(sentence_lengths))
        document_ends = self.num_sentences + 1 + np.flatnonzero(ends_document)
        self._document_offsets.append(document_ends)
        if len(document_ends):
            self._last_document_end = int(document_ends[-1])
        self.num_tokens += int(sentence_lengths.sum())
        self.num_sentences += len(sentence_lengths)
        self.num_documents += len(document_ends)

    def finish(self, meta: dict) -> dict:
        """Close the files and write meta.json. The corpus end also ends a document."""
        self.end_document()
        self._tokens.close()
        self._sentence_offsets.close()
        self._document_offsets.close()
        meta = {
            **meta,
            "format_version": CACHE_FORMAT_VERSION,
            "token_dtype": self.token_dtype.name,
            "num_tokens": self.num_tokens,
            "num_sentences": self.num_sentences,
            "num_documents": self.num_documents,
            "max_token_id": self.max_token_id,
            # A fresh id per build: tests and logs tell a rebuilt cache from a reused one.
            "build_id": uuid.uuid4().hex,
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        with open(self.directory / META_FILE, "w") as f:
            json.dump(meta, f, indent=1, sort_keys=True)
        return meta

    def end_document(self) -> None:
        """Close the current document after the sentences appended so far (no-op if closed)."""
        if self.num_sentences > self._last_document_end:
            self._document_offsets.append(np.array([self.num_sentences], np.int64))
            self._last_document_end = self.num_sentences
            self.num_documents += 1

    def abandon(self) -> None:
        self._tokens.close()
        self._sentence_offsets.abandon()
        self._document_offsets.abandon()


def _read_corpus_batches(path: Path, batch_lines: int, progress: bool) -> Iterator[list[str | None]]:
    """Yields lists of sentences, with None where a document ends (`[EOD]` or a blank line).

    Read in binary and decoded per line so the progress bar can count bytes; each batch
    holds about `batch_lines` sentences, so memory is bounded whatever the corpus size.
    """
    items: list[str | None] = []
    num_sentences = 0
    with (
        open(path, "rb") as f,
        tqdm(
            total=path.stat().st_size, unit="B", unit_scale=True, desc=f"tokenizing {path.name}", disable=not progress
        ) as bar,
    ):
        bytes_read = 0
        for line_number, raw in enumerate(f, start=1):
            bytes_read += len(raw)
            try:
                line = raw.decode("utf-8").strip()
            except UnicodeDecodeError as error:
                raise ValueError(f"{path}:{line_number}: not UTF-8 ({error})") from None
            if not line or line == DOCUMENT_END_LINE:
                items.append(None)
                continue
            items.append(line)
            num_sentences += 1
            if num_sentences >= batch_lines:
                yield items
                bar.update(bytes_read)
                items, num_sentences, bytes_read = [], 0, 0
        yield items
        bar.update(bytes_read)


def _write_text_batch(
    writer: TokenCacheWriter, items: list[str | None], tokenizer: CorpusTokenizer, max_sentence_tokens: int, stats: dict
) -> None:
    texts = [item for item in items if item is not None]
    encoded = tokenizer.encode_ids_batch(texts) if texts else []
    lengths = np.fromiter(map(len, encoded), np.int64, len(encoded))
    token_ids = np.fromiter(itertools.chain.from_iterable(encoded), np.int64, int(lengths.sum()))
    if len(token_ids) and (token_ids.min() < 0 or token_ids.max() >= tokenizer.vocab_size):
        raise TokenCacheError(
            f"tokenizer {tokenizer.fingerprint()[:12]} produced id {int(token_ids.max())} outside its vocabulary "
            f"of {tokenizer.vocab_size}"
        )

    # Sentences longer than max_sentence_tokens keep their first max_sentence_tokens tokens:
    # a pathological line (a table, a paragraph without punctuation) cannot blow up an
    # example, and every sentence length fits the uint32 fields of the example plans.
    too_long = lengths > max_sentence_tokens
    if too_long.any():
        position_in_sentence = np.arange(len(token_ids)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        token_ids = token_ids[position_in_sentence < max_sentence_tokens]
        stats["num_truncated_sentences"] += int(too_long.sum())
        stats["num_truncated_tokens"] += int((lengths[too_long] - max_sentence_tokens).sum())
        lengths = np.minimum(lengths, max_sentence_tokens)

    # Map the document ends onto kept sentences; a sentence that tokenizes to nothing is dropped.
    ends_document = np.zeros(len(texts), bool)
    last_kept = -1
    sentence_index = 0
    for item in items:
        if item is None:
            if last_kept >= 0:
                ends_document[last_kept] = True
            else:
                writer.end_document()  # the document closed before this batch's first sentence
            continue
        if lengths[sentence_index] > 0:
            last_kept = sentence_index
        sentence_index += 1
    kept = lengths > 0
    stats["num_empty_sentences"] += int((~kept).sum())
    writer.append(token_ids, lengths[kept], ends_document[kept])


def build_token_cache(
    corpus_path: str | os.PathLike,
    tokenizer: CorpusTokenizer,
    cache_root: str | os.PathLike,
    max_sentence_tokens: int = 512,
    batch_lines: int = 20_000,
    progress: bool = True,
) -> TokenCache:
    """Tokenize `corpus_path` into a cache under `cache_root`, or reuse the one already there.

    Reuse needs the same corpus bytes, tokenizer fingerprint and max_sentence_tokens; a
    cache that fails verification (e.g. truncated by a full disk) is rebuilt.
    """
    corpus_path = Path(corpus_path)
    cache_root = Path(cache_root)
    if not corpus_path.is_file():
        raise FileNotFoundError(f"prepared corpus file not found: {corpus_path}")
    fingerprint = tokenizer.fingerprint()
    corpus_sha256 = file_sha256(corpus_path)
    key = token_cache_key(corpus_sha256, fingerprint, max_sentence_tokens)
    directory = cache_root / f"{corpus_path.stem}-{key[:20]}"

    cache = _open_valid(directory, fingerprint, tokenizer.vocab_size)
    if cache is None:
        with build_lock(directory, "the token cache"):
            # Another process may have built it while this one waited; an invalid one is
            # removed only here, under the lock.
            cache = _open_valid(directory, fingerprint, tokenizer.vocab_size, remove_invalid=True)
            if cache is None:
                _build(
                    directory, corpus_path, corpus_sha256, key, tokenizer, max_sentence_tokens, batch_lines, progress
                )
                return TokenCache.open(directory, tokenizer_fingerprint=fingerprint, vocab_size=tokenizer.vocab_size)
    log.info("reusing token cache %s", directory)
    return cache


def _open_valid(directory: Path, fingerprint: str, vocab_size: int, remove_invalid: bool = False) -> TokenCache | None:
    """The verified cache in `directory`, or None when there is none (or an invalid one)."""
    if not directory.exists():
        return None
    try:
        return TokenCache.open(directory, tokenizer_fingerprint=fingerprint, vocab_size=vocab_size)
    except TokenCacheError as error:
        if remove_invalid:
            log.warning("rebuilding invalid token cache %s: %s", directory, error)
            _remove_directory(directory)
        return None


def _build(
    directory: Path,
    corpus_path: Path,
    corpus_sha256: str,
    key: str,
    tokenizer: CorpusTokenizer,
    max_sentence_tokens: int,
    batch_lines: int,
    progress: bool,
) -> None:
    fingerprint = tokenizer.fingerprint()
    temporary = private_temporary(directory)
    writer = TokenCacheWriter(temporary, token_dtype_for(tokenizer.vocab_size))
    stats = {"num_truncated_sentences": 0, "num_truncated_tokens": 0, "num_empty_sentences": 0}
    try:
        for items in _read_corpus_batches(corpus_path, batch_lines, progress):
            _write_text_batch(writer, items, tokenizer, max_sentence_tokens, stats)
        if writer.num_sentences == 0:
            raise ValueError(f"{corpus_path}: corpus is empty (no sentence with at least one token)")
        meta = writer.finish(
            {
                "corpus_path": str(corpus_path.resolve()),
                "corpus_sha256": corpus_sha256,
                "corpus_bytes": corpus_path.stat().st_size,
                "tokenizer_fingerprint": fingerprint,
                "vocab_size": int(tokenizer.vocab_size),
                "max_sentence_tokens": int(max_sentence_tokens),
                "cache_key": key,
                **stats,
            }
        )
    except BaseException:
        writer.abandon()
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    if stats["num_truncated_sentences"]:
        log.warning(
            "%s: %d sentences longer than %d tokens were truncated (%d tokens dropped)",
            corpus_path,
            stats["num_truncated_sentences"],
            max_sentence_tokens,
            stats["num_truncated_tokens"],
        )
    # Atomic: readers see no cache or a complete one. A valid cache already in place (built by
    # a process that did not take the lock) is kept and ours discarded.
    publish_directory(
        temporary, directory, lambda existing: _open_valid(existing, fingerprint, tokenizer.vocab_size) is not None
    )
    log.info(
        "built token cache %s: %d documents, %d sentences, %d tokens",
        directory,
        meta["num_documents"],
        meta["num_sentences"],
        meta["num_tokens"],
    )


def _remove_directory(directory: Path) -> None:
    # Rename first so a concurrent reader never sees a half-deleted cache under the real name.
    doomed = directory.with_name(f".deleting-{directory.name}-{uuid.uuid4().hex[:8]}")
    os.rename(directory, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


# ---------------------------------------------------------------------------------------
# Reading a cache


class ArrayFile:
    """Reads of a 1-D array file (raw .bin or .npy) by positional reads (os.pread).

    For random access during training. A np.memmap reopened per batch (nanoGPT) keeps memory
    flat only if a read maps little: on current kernels whose page cache uses large folios
    (here Linux 6.18, ext4) one random read through a map makes the whole folio resident,
    measured at ~1.1 MB per read and ~100 MB for a batch of 64 NSP pairs. pread copies only
    the bytes asked for. The files stay memmap-compatible; TokenCache.tokens() and friends
    still map them for sequential use. Open per batch (cheap), close after.
    """

    def __init__(self, path: str | os.PathLike, dtype: np.dtype | str | None = None, length: int | None = None):
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_RDONLY)
        if self.path.suffix == ".npy":
            try:
                # The header through the same descriptor: the file may be replaced or removed by name meanwhile.
                with open(self._fd, "rb", closefd=False) as f:
                    version = np.lib.format.read_magic(f)
                    read_header = (
                        np.lib.format.read_array_header_1_0
                        if version == (1, 0)
                        else np.lib.format.read_array_header_2_0
                    )
                    shape, _, header_dtype = read_header(f)
                    self._data_offset = f.tell()
            except BaseException:
                os.close(self._fd)
                raise
            self.dtype, self.length = np.dtype(header_dtype), shape[0]
        else:
            self._data_offset = 0
            self.dtype = np.dtype(dtype)
            self.length = length if length is not None else self.path.stat().st_size // self.dtype.itemsize

    def __len__(self) -> int:
        return self.length

    def read(self, start: int, stop: int) -> np.ndarray:
        """Elements [start, stop), as a new array."""
        if not 0 <= start <= stop <= self.length:
            raise IndexError(f"{self.path}: range [{start}, {stop}) outside [0, {self.length})")
        size = self.dtype.itemsize
        data = os.pread(self._fd, (stop - start) * size, self._data_offset + start * size)
        if len(data) != (stop - start) * size:
            raise TokenCacheError(f"{self.path}: short read (truncated file?)")
        return np.frombuffer(data, self.dtype).copy()  # writable, owns its memory

    def take(self, indices: np.ndarray) -> np.ndarray:
        """Elements at `indices` (any order), one small read each."""
        indices = np.asarray(indices, np.int64)
        if len(indices) and (indices.min() < 0 or indices.max() >= self.length):
            raise IndexError(f"{self.path}: index outside [0, {self.length})")
        size, base = self.dtype.itemsize, self._data_offset
        data = b"".join(os.pread(self._fd, size, base + i * size) for i in indices.tolist())
        if len(data) != len(indices) * size:
            raise TokenCacheError(f"{self.path}: short read (truncated file?)")
        return np.frombuffer(data, self.dtype).copy()

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> ArrayFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class TokenCache:
    """A verified cache directory. Arrays are opened on demand and never held, so resident
    memory stays flat: random reads go through `open_*` (positional reads), whole-array and
    sequential use through the memory maps of `tokens()` and the offsets."""

    def __init__(self, directory: Path, meta: dict):
        self.directory = directory
        self.meta = meta
        self.token_dtype = np.dtype(meta["token_dtype"])
        self.num_tokens: int = meta["num_tokens"]
        self.num_sentences: int = meta["num_sentences"]
        self.num_documents: int = meta["num_documents"]

    @classmethod
    def open(
        cls, directory: str | os.PathLike, tokenizer_fingerprint: str | None = None, vocab_size: int | None = None
    ) -> TokenCache:
        """Open and verify; raises TokenCacheError naming what is wrong."""
        directory = Path(directory)
        try:
            with open(directory / META_FILE) as f:
                meta = json.load(f)
        except (OSError, json.JSONDecodeError) as error:
            raise TokenCacheError(f"{directory}: no readable {META_FILE} ({error})") from None
        if meta.get("format_version") != CACHE_FORMAT_VERSION:
            raise TokenCacheError(
                f"{directory}: cache format {meta.get('format_version')}, expected {CACHE_FORMAT_VERSION}"
            )
        cache = cls(directory, meta)
        cache._verify_files()
        if tokenizer_fingerprint is not None and meta["tokenizer_fingerprint"] != tokenizer_fingerprint:
            raise TokenCacheError(
                f"{directory} was tokenized with tokenizer {meta['tokenizer_fingerprint'][:12]}, "
                f"not with the configured tokenizer {tokenizer_fingerprint[:12]}"
            )
        if vocab_size is not None and meta["max_token_id"] >= vocab_size:
            raise TokenCacheError(
                f"{directory} holds token id {meta['max_token_id']}, outside the configured "
                f"tokenizer's vocabulary of {vocab_size}: tokenized with another tokenizer"
            )
        return cache

    def _verify_files(self) -> None:
        tokens_path = self.directory / TOKENS_FILE
        expected_bytes = self.num_tokens * self.token_dtype.itemsize
        if not tokens_path.is_file() or tokens_path.stat().st_size != expected_bytes:
            size = tokens_path.stat().st_size if tokens_path.is_file() else "missing"
            raise TokenCacheError(f"{tokens_path}: {size} bytes, expected {expected_bytes} (truncated cache?)")
        for name, length, last in (
            (SENTENCE_OFFSETS_FILE, self.num_sentences + 1, self.num_tokens),
            (DOCUMENT_OFFSETS_FILE, self.num_documents + 1, self.num_sentences),
        ):
            try:
                offsets = np.load(self.directory / name, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as error:
                raise TokenCacheError(f"{self.directory / name}: unreadable ({error}) (truncated cache?)") from None
            if offsets.shape != (length,) or offsets.dtype != np.int64 or int(offsets[-1]) != last:
                raise TokenCacheError(
                    f"{self.directory / name}: shape {offsets.shape}, expected ({length},) "
                    f"ending at {last} (truncated cache?)"
                )
            del offsets

    def tokens(self) -> np.memmap:
        """(num_tokens,) token ids, a fresh read-only map: drop it after reading."""
        return np.memmap(self.directory / TOKENS_FILE, dtype=self.token_dtype, mode="r", shape=(self.num_tokens,))

    def sentence_offsets(self) -> np.ndarray:
        """(num_sentences + 1,) int64 token offsets, memory-mapped."""
        return np.load(self.directory / SENTENCE_OFFSETS_FILE, mmap_mode="r", allow_pickle=False)

    def document_offsets(self) -> np.ndarray:
        """(num_documents + 1,) int64 sentence offsets, memory-mapped."""
        return np.load(self.directory / DOCUMENT_OFFSETS_FILE, mmap_mode="r", allow_pickle=False)

    def open_tokens(self) -> ArrayFile:
        return ArrayFile(self.directory / TOKENS_FILE, self.token_dtype, self.num_tokens)

    def open_sentence_offsets(self) -> ArrayFile:
        return ArrayFile(self.directory / SENTENCE_OFFSETS_FILE)

    def open_document_offsets(self) -> ArrayFile:
        return ArrayFile(self.directory / DOCUMENT_OFFSETS_FILE)

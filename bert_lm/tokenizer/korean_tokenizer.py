"""Mecab-aware WordPiece tokenizer (and plain WordPiece as the baseline).

Both kinds share one HF ``tokenizers`` pipeline: no normalizer (cleaning already
normalized the corpus, and a normalizer would move character offsets), a
WhitespaceSplit pre-tokenizer, a WordPiece model with the ``##`` continuation
prefix, and the WordPiece decoder without its "cleanup" (which would glue
punctuation and break decode(encode(x)) == x).

* ``mecab=True``: :mod:`bert_lm.tokenizer.mecab_segmenter` first turns ``국가의`` into
  ``국가 ##의``, analysing each line as one sentence (a word's morphemes depend
  on its neighbours); each morpheme is one WordPiece input word. WhitespaceSplit and not
  ``BertPreTokenizer``: the latter treats ``#`` as punctuation and would split
  ``##의`` into ``#``, ``#``, ``의``.
* ``mecab=False``: plain WordPiece over whitespace-separated words, entirely in Rust.

Because continuation morphemes carry ``##``, the stock WordPiece decoder restores
the original words and spacing. One ambiguity is inherent to the ``##`` marker and
shared with every BERT vocabulary: a word that itself begins with a literal ``##``
decodes glued to the word before it.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from tqdm.auto import tqdm

from bert_lm.tokenizer import mecab_segmenter

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[EOD]")
TOKENIZER_FILE = "tokenizer.json"
SETTINGS_FILE = "bert_lm_tokenizer.json"
# Lines handed to one pool worker at a time: large enough to amortise pickling.
_SEGMENT_CHUNK_LINES = 4_000
# Below this many distinct lines, Mecab in this process beats shipping them to the pool.
_POOL_MIN_LINES = 1_000


@dataclass(frozen=True)
class TokenizedText:
    """Token ids of one text, with each token's character span in that text."""

    ids: list[int]
    offsets: list[tuple[int, int]]
    tokens: list[str]


def _chunks(lines: Iterable[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for line in lines:
        chunk.append(line)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _resolve_workers(num_workers: int | None) -> int:
    return max(1, num_workers if num_workers else (os.cpu_count() or 1))


class KoreanTokenizer:
    """Encode/decode Korean text; save/load one directory loadable by HF too."""

    def __init__(self, hf_tokenizer: Tokenizer, mecab: bool, num_workers: int | None = None):
        self.hf_tokenizer = hf_tokenizer
        self.mecab = mecab
        self.num_workers = _resolve_workers(num_workers)
        vocab = hf_tokenizer.get_vocab()
        missing = [t for t in SPECIAL_TOKENS if t not in vocab]
        if missing:
            raise ValueError(f"tokenizer vocabulary lacks special tokens {missing}")
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id, self.eod_id = (
            vocab[t] for t in SPECIAL_TOKENS
        )
        self.special_ids = [vocab[t] for t in SPECIAL_TOKENS]
        self._pool = None
        self._pool_pid: int | None = None  # the process that started _pool

    # ------------------------------------------------------------------ build
    @staticmethod
    def _empty_hf_tokenizer() -> Tokenizer:
        hf = Tokenizer(models.WordPiece(unk_token="[UNK]", continuing_subword_prefix="##"))
        hf.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        hf.decoder = decoders.WordPiece(prefix="##", cleanup=False)
        return hf

    @classmethod
    def train(
        cls,
        lines: Iterable[str],
        *,
        mecab: bool = True,
        vocab_size: int = 20_000,
        min_frequency: int = 2,
        limit_alphabet: int = 6_000,
        num_workers: int | None = None,
        num_lines: int | None = None,
        show_progress: bool = True,
    ) -> KoreanTokenizer:
        """Train a WordPiece vocabulary on sentences (``[EOD]`` lines are skipped)."""
        workers = _resolve_workers(num_workers)
        sentences = (line for line in lines if line.strip() and line.strip() != "[EOD]")
        if mecab:
            sentences = _segment_parallel(sentences, workers, num_lines, show_progress)
        trainer = trainers.WordPieceTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            limit_alphabet=limit_alphabet,
            special_tokens=list(SPECIAL_TOKENS),
            continuing_subword_prefix="##",
            show_progress=show_progress,
        )
        hf = cls._empty_hf_tokenizer()
        hf.train_from_iterator(sentences, trainer=trainer, length=num_lines)
        if hf.get_vocab_size() <= len(SPECIAL_TOKENS):
            raise ValueError("tokenizer training saw no text: is the corpus empty?")
        tokenizer = cls(hf, mecab=mecab, num_workers=workers)
        tokenizer._add_post_processor()
        return tokenizer

    def _add_post_processor(self) -> None:
        # [CLS] A [SEP] (B [SEP]) for users of tokenizer.json (fill-mask pipelines);
        # our own encode() never adds special tokens.
        self.hf_tokenizer.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]",
            pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", self.cls_id), ("[SEP]", self.sep_id)],
        )

    # --------------------------------------------------------------- save/load
    def save(self, directory: str | os.PathLike) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.hf_tokenizer.save(str(directory / TOKENIZER_FILE))
        settings = {"mecab": self.mecab, "special_tokens": list(SPECIAL_TOKENS), "format_version": 1}
        (directory / SETTINGS_FILE).write_text(json.dumps(settings, indent=2), encoding="utf-8")
        # What transformers needs to load the same file as a fast tokenizer.
        hf_config = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "unk_token": "[UNK]",
            "pad_token": "[PAD]",
            "cls_token": "[CLS]",
            "sep_token": "[SEP]",
            "mask_token": "[MASK]",
            "additional_special_tokens": ["[EOD]"],
            "clean_up_tokenization_spaces": False,
            "do_lower_case": False,
        }
        (directory / "tokenizer_config.json").write_text(json.dumps(hf_config, indent=2), encoding="utf-8")
        vocab = sorted(self.hf_tokenizer.get_vocab().items(), key=lambda kv: kv[1])
        (directory / "vocab.txt").write_text("".join(tok + "\n" for tok, _ in vocab), encoding="utf-8")
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike, num_workers: int | None = None) -> KoreanTokenizer:
        directory = Path(directory)
        tokenizer_file, settings_file = directory / TOKENIZER_FILE, directory / SETTINGS_FILE
        for required in (tokenizer_file, settings_file):
            if not required.is_file():
                raise FileNotFoundError(
                    f"{required} is missing: {directory} is not a tokenizer saved by "
                    "KoreanTokenizer.save (run `python run.py` to train one, or point "
                    "tokenizer.dir at a saved tokenizer)."
                )
        settings = json.loads(settings_file.read_text(encoding="utf-8"))
        return cls(Tokenizer.from_file(str(tokenizer_file)), mecab=bool(settings["mecab"]), num_workers=num_workers)

    def fingerprint(self) -> str:
        """Content hash of everything that changes the ids this tokenizer produces."""
        digest = hashlib.sha256(self.hf_tokenizer.to_str().encode("utf-8"))
        digest.update(b"mecab" if self.mecab else b"plain")
        return digest.hexdigest()

    # ------------------------------------------------------------ vocabulary
    @property
    def vocab_size(self) -> int:
        return self.hf_tokenizer.get_vocab_size()

    def id_to_token(self, token_id: int) -> str:
        return self.hf_tokenizer.id_to_token(token_id)

    def continuation_mask(self) -> np.ndarray:
        """(vocab_size,) bool: True for ``##`` pieces (used by whole-word masking)."""
        mask = np.zeros(self.vocab_size, dtype=bool)
        for token, token_id in self.hf_tokenizer.get_vocab().items():
            mask[token_id] = token.startswith("##")
        return mask

    # ---------------------------------------------------------------- encode
    def segment(self, text: str) -> str:
        """The text as the WordPiece model sees it (the Mecab step; identity for plain)."""
        return mecab_segmenter.segment(text, SPECIAL_TOKENS) if self.mecab else text

    def encode(self, text: str) -> TokenizedText:
        """Ids and character offsets into ``text`` itself; no special tokens added."""
        return self.encode_batch([text])[0]

    def encode_batch(self, texts: list[str]) -> list[TokenizedText]:
        if not self.mecab:
            encodings = self.hf_tokenizer.encode_batch(texts, add_special_tokens=False)
            return [TokenizedText(e.ids, [tuple(o) for o in e.offsets], e.tokens) for e in encodings]
        morphemes = [mecab_segmenter.morphemes_with_offsets(t, SPECIAL_TOKENS) for t in texts]
        encodings = self.hf_tokenizer.encode_batch(
            [[m.piece for m in ms] for ms in morphemes], is_pretokenized=True, add_special_tokens=False
        )
        results = []
        for ms, enc in zip(morphemes, encodings, strict=True):
            offsets = []
            for word_id, (start, end) in zip(enc.word_ids, enc.offsets, strict=True):
                morpheme = ms[word_id]
                # Offsets are relative to the piece; its "##" has no place in the text.
                skip = len(morpheme.piece) - (morpheme.end - morpheme.start)
                offsets.append((morpheme.start + max(0, start - skip), morpheme.start + max(0, end - skip)))
            results.append(TokenizedText(enc.ids, offsets, enc.tokens))
        return results

    def encode_ids_batch(self, texts: list[str]) -> list[list[int]]:
        """Ids only, for corpus tokenization.

        Plain WordPiece: the Rust tokenizer, in parallel. Mecab-aware: each
        distinct line goes through Mecab (as a whole sentence) and WordPiece once,
        over the worker pool when the batch is large enough to pay for shipping
        it; a line repeated within the batch reuses its ids (same line, same ids).
        """
        if not self.mecab:
            return self._ids(texts)
        distinct = list(dict.fromkeys(texts))
        # A daemonic process (a DataLoader worker) may not start children.
        if self.num_workers > 1 and len(distinct) >= _POOL_MIN_LINES and not multiprocessing.current_process().daemon:
            size = -(-len(distinct) // (4 * self.num_workers))
            chunks = [distinct[i : i + size] for i in range(0, len(distinct), size)]
            parts = self._worker_pool().map(_line_ids_in_worker, chunks)
            flat = np.concatenate([p[0] for p in parts]).tolist()
            bounds = np.concatenate(([0], np.cumsum(np.concatenate([p[1] for p in parts])))).tolist()
            distinct_ids = [flat[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        else:
            distinct_ids = _mecab_line_ids(self.hf_tokenizer, distinct)
        if len(distinct) == len(texts):
            return distinct_ids
        ids_by_line = dict(zip(distinct, distinct_ids, strict=True))
        return [list(ids_by_line[t]) for t in texts]

    def _ids(self, texts: list[str]) -> list[list[int]]:
        # encode_batch_fast skips offset tracking: ids are all corpus tokenization needs.
        return [e.ids for e in self.hf_tokenizer.encode_batch_fast(texts, add_special_tokens=False)]

    def _worker_pool(self):
        # One pool for the tokenizer's lifetime. Children build their own Tagger
        # (never pickled); the WordPiece part travels as its JSON, which works
        # under fork, spawn and forkserver alike.
        if self._pool is not None and self._pool_pid != os.getpid():
            # Inherited through fork: its handler threads do not exist here, and a
            # map() on it would wait forever. Leave it to the parent; start our own.
            self._pool = None
        if self._pool is None:
            self._pool_pid = os.getpid()
            self._pool = multiprocessing.get_context().Pool(
                self.num_workers, initializer=_init_line_ids_worker, initargs=(self.hf_tokenizer.to_str(),)
            )
        return self._pool

    def __repr__(self) -> str:
        return f"KoreanTokenizer({'Mecab-aware' if self.mecab else 'plain'} WordPiece, vocab {self.vocab_size})"

    def close(self) -> None:
        """Stop the Mecab worker pool (also done at interpreter exit)."""
        if self._pool is not None and self._pool_pid == os.getpid():
            self._pool.terminate()
        self._pool = None

    def __getstate__(self):
        # A pool cannot cross a process boundary; a copy starts its own when needed.
        return {**self.__dict__, "_pool": None, "_pool_pid": None}

    # ---------------------------------------------------------------- decode
    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        """Join ``##`` pieces to the token before them, others with a space.

        The same rule as the HF WordPiece decoder, except that a bare ``##`` token
        (only ever the start of a word that begins with a literal ``##``) is kept
        as text instead of being stripped to nothing.
        """
        special = set(self.special_ids) if skip_special_tokens else set()
        out: list[str] = []
        for token_id in ids:
            if token_id in special:
                continue
            token = self.hf_tokenizer.id_to_token(token_id)
            if out and token.startswith("##") and token != "##":
                out[-1] += token[2:]
            else:
                out.append(token)
        return " ".join(out)


def _mecab_line_ids(hf_tokenizer: Tokenizer, texts: list[str]) -> list[list[int]]:
    """Mecab step then WordPiece; ``encode_batch_fast`` skips offset tracking."""
    segmented = mecab_segmenter.segment_many(texts, SPECIAL_TOKENS)
    return [e.ids for e in hf_tokenizer.encode_batch_fast(segmented, add_special_tokens=False)]


# A pool worker's WordPiece tokenizer, set by its initializer.
_worker_wordpiece: Tokenizer | None = None


def _init_line_ids_worker(tokenizer_json: str) -> None:
    global _worker_wordpiece
    # The pool is the parallelism: one Rust thread per worker, not one per core each.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _worker_wordpiece = Tokenizer.from_str(tokenizer_json)


def _line_ids_in_worker(lines: list[str]) -> tuple[np.ndarray, np.ndarray]:
    # Flat arrays pickle far faster than a list of lists of ints.
    ids = _mecab_line_ids(_worker_wordpiece, lines)
    flat = np.fromiter(chain.from_iterable(ids), np.int64, sum(map(len, ids)))
    return flat, np.fromiter(map(len, ids), np.int64, len(ids))


def _segment_parallel(lines: Iterable[str], workers: int, total: int | None, show_progress: bool) -> Iterator[str]:
    """Mecab-segment lines over ``workers`` processes, in order, with a progress bar."""
    bar = tqdm(total=total, unit="line", desc="mecab", disable=not show_progress, mininterval=1.0)
    chunks = _chunks(lines, _SEGMENT_CHUNK_LINES)
    if workers <= 1:
        results = (mecab_segmenter.segment_many(c, SPECIAL_TOKENS) for c in chunks)
        for segmented in results:
            bar.update(len(segmented))
            yield from segmented
        bar.close()
        return
    # forkserver/spawn children import the module and build their own Tagger
    # lazily; nothing unpicklable crosses the process boundary.
    with multiprocessing.get_context().Pool(workers) as pool:
        for segmented in pool.imap(_segment_chunk, chunks):
            bar.update(len(segmented))
            yield from segmented
    bar.close()


def _segment_chunk(lines: list[str]) -> list[str]:
    return mecab_segmenter.segment_many(lines, SPECIAL_TOKENS)

"""Word -> token ids memo for corpus tokenization with the Mecab-aware tokenizer.

With a WhitespaceSplit pre-tokenizer and Mecab run on each word on its own (see
:mod:`bert_lm.mecab_segmenter`), a word always gets the same token ids, and a
line's ids are its words' ids in order. A corpus repeats its words (Zipf), so
corpus tokenization is mostly memo lookups; only words not seen yet go through
Mecab and WordPiece (:func:`word_ids_flat`, also run in pool workers).

The memo keeps every word's ids in one flat array, so the ids of a batch of
lines are gathered with numpy instead of a Python loop over each of its words.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tokenizers import Tokenizer

from bert_lm import mecab_segmenter

# Words per text when new words are encoded together: one Rust call per word would
# cost ~7 µs of call and object overhead each.
WORDS_PER_TEXT = 2_048


def word_ids_flat(hf_tokenizer: Tokenizer, separator: str, separator_id: int, words: Sequence[str]):
    """Token ids of each word, as (flat ids, ids per word).

    The words must not contain special-token strings (``[MASK]``, ``[PAD]``, ...):
    the caller sends lines holding them through the slow, protected path.
    Mecab segments each word ("국가의" -> "국가 ##의"); thousands of segmented words
    then go through WordPiece as one text, separated by a special token that no
    word produces (``[PAD]``), and the ids are cut at the separators.
    ``encode_batch_fast`` skips offsets and word ids, ~3x faster than tracking
    which word each token came from.
    """
    segmented = mecab_segmenter.segment_words(list(words))
    groups = [segmented[i : i + WORDS_PER_TEXT] for i in range(0, len(segmented), WORDS_PER_TEXT)]
    glue = f" {separator} "
    encodings = hf_tokenizer.encode_batch_fast([glue.join(g) for g in groups], add_special_tokens=False)
    flat_parts, length_parts = [], []
    for group, encoding in zip(groups, encodings, strict=True):
        ids = np.asarray(encoding.ids, dtype=np.int64)
        cuts = np.flatnonzero(ids == separator_id)
        if len(cuts) != len(group) - 1:
            raise ValueError(
                f"{len(cuts) + 1} pieces for {len(group)} words: a word holds the special token {separator!r}"
            )
        length_parts.append(np.diff(np.concatenate(([-1], cuts, [len(ids)]))) - 1)
        flat_parts.append(ids[ids != separator_id])
    if not groups:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(flat_parts), np.concatenate(length_parts)


class WordIdsMemo:
    """word -> token ids, bounded by ``max_words`` (cleared when full)."""

    def __init__(self, max_words: int):
        self.max_words = max_words
        self.index: dict[str, int] = {}  # word -> its row
        self._ids = np.zeros(1 << 16, np.int32)
        self._num_ids = 0
        self._starts = np.zeros(1 << 14, np.int64)  # row -> first id in _ids
        self._lengths = np.zeros(1 << 14, np.int64)  # row -> number of ids

    def __len__(self) -> int:
        return len(self.index)

    def clear(self) -> None:
        self.index.clear()
        self._num_ids = 0

    @staticmethod
    def _grown(array: np.ndarray, needed: int) -> np.ndarray:
        if needed <= len(array):
            return array
        grown = np.zeros(max(needed, 2 * len(array)), array.dtype)
        grown[: len(array)] = array
        return grown

    def add(self, words: Sequence[str], flat_ids: np.ndarray, lengths: np.ndarray) -> None:
        """Store the ids of new ``words`` (as returned by :func:`word_ids_flat`)."""
        first_row, rows = len(self.index), len(words)
        self._starts = self._grown(self._starts, first_row + rows)
        self._lengths = self._grown(self._lengths, first_row + rows)
        self._ids = self._grown(self._ids, self._num_ids + len(flat_ids))
        self._starts[first_row : first_row + rows] = self._num_ids + np.cumsum(lengths) - lengths
        self._lengths[first_row : first_row + rows] = lengths
        self._ids[self._num_ids : self._num_ids + len(flat_ids)] = flat_ids
        self._num_ids += len(flat_ids)
        self.index.update(zip(words, range(first_row, first_row + rows), strict=True))

    def gather(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(the ids of the words in ``rows``, one after another; ids per word)."""
        starts, lengths = self._starts[rows], self._lengths[rows]
        within_word = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        return self._ids[np.repeat(starts, lengths) + within_word], lengths

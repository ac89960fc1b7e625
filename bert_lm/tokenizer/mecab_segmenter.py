"""Mecab step of the Mecab-aware WordPiece tokenizer.

Each line (a sentence, as the corpus is prepared) is analysed by Mecab with the
mecab-ko-dic dictionary *as a whole*; a morpheme that Mecab found right after
whitespace starts a word, every other one is marked as a continuation piece with
``##``::

    "국가의 미래를"  ->  "국가 ##의 미래 ##를"

The segmented string is what the WordPiece model in ``tokenizer.json`` is trained
on and what it expects as input, so this module is also "the Mecab step to run
around" a plain ``transformers.PreTrainedTokenizerFast``: see :func:`segment`.

Why whole lines and not one word at a time: a word analysed alone starts right
after Mecab's sentence-begin node, where an interjection or a one-syllable noun is
cheap, so ``일본의`` alone comes out as ``일 ##본의`` but as ``일본 ##의`` in its
sentence; on petitions text 5 % of words differ. Nothing is memoised per word for
that reason: a word's pieces depend on its neighbours.

Word boundaries come from Mecab itself: the node format ``%pS`` prints the
whitespace Mecab skipped before a morpheme, and each morpheme is preceded by a
private-use mark, so one ``parse`` call per line yields the segmented line after
two ``str.replace`` calls (the fast path, :func:`segment`). Character offsets come
from the same parse through the nodes' lengths (:func:`morphemes_with_offsets`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bert_lm.corpus.mecab_tagger import get_tagger

CONTINUATION_PREFIX = "##"

# Precedes every morpheme in the fast path's Mecab output; a private-use code
# point that no Korean text uses (a line that does contain it takes the slow path).
_MARK = "\ue000"
_MARKED_FORMAT = f"%pS{_MARK}%m"

# Python's whitespace (str.split) is a superset of Rust's (HF WhitespaceSplit)
# and of Mecab's (space, tab, newline). Words are Python-whitespace-separated runs,
# as before, so Mecab must see every such character as a plain space: anything
# else (U+3000, U+00A0, \x1f, ...) would become a morpheme inside a word.
_PYTHON_WHITESPACE = [chr(c) for c in range(0x110000) if chr(c).isspace()]
_TO_MECAB_INPUT = {ord(c): " " for c in _PYTHON_WHITESPACE}
# Mecab reads a C string and stops at NUL; \x01 stands in for it (a one-character
# symbol to Mecab, so offsets stay aligned) and surfaces are read back from the text.
_TO_MECAB_INPUT[0] = "\x01"
# Stands for a protected string (a special token) in Mecab's input: a one-character
# symbol that Mecab never groups with its neighbours.
_PLACEHOLDER = "\x01"
# Lines the fast path cannot take as they are: whitespace other than " ", NUL, the mark.
_NEEDS_SLOW_PATH = re.compile("[" + re.escape("".join(c for c in _PYTHON_WHITESPACE if c != " ")) + f"\x00{_MARK}]")

_MARKED_ARGS = f" --node-format={_MARKED_FORMAT} --unk-format={_MARKED_FORMAT} --bos-format= --eos-format="


def _marked_tagger():
    return get_tagger(_MARKED_ARGS)


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


def _morpheme_spans(mecab_input: str) -> list[tuple[int, int, bool]]:
    """(start, end, starts a word) of each morpheme of ``mecab_input``
    (whitespace already mapped to " "), analysed by Mecab as one sentence. Node
    lengths are UTF-8 bytes: ``rlength - length`` is the whitespace Mecab skipped,
    one byte per space."""
    spans: list[tuple[int, int, bool]] = []
    pos = 0
    node = _marked_tagger().parseToNode(mecab_input)
    while node is not None:
        if node.stat not in (2, 3):  # MECAB_BOS_NODE, MECAB_EOS_NODE
            skipped = node.rlength - node.length
            start = pos + skipped
            end = start + len(node.surface)
            spans.append((start, end, skipped > 0 or not spans))  # the first morpheme opens a word
            pos = end
        node = node.next
    covered = "".join(mecab_input[s:e] for s, e, _ in spans)
    if covered != "".join(mecab_input.split(" ")):
        # Mecab has always given back every character; should a dictionary ever
        # drop one, keep each whitespace-separated word whole rather than lose text.
        return [(m.start(), m.end(), True) for m in re.finditer(r"[^ ]+", mecab_input)]
    return spans


def morphemes_with_offsets(text: str, protected: tuple[str, ...] = ()) -> list[Morpheme]:
    """Morphemes of ``text`` with character offsets into ``text`` itself.

    Protected strings (special tokens) are kept whole: Mecab reads each as a
    one-character placeholder, so the words around it keep their sentence
    context. A morpheme (or protected string) starts a word when whitespace or the
    start of the text precedes it.
    """
    spans = _protected_spans(text, protected)
    mecab_input = text.translate(_TO_MECAB_INPUT)
    if not any(is_protected for _, _, is_protected in spans):
        return [
            Morpheme(("" if starts else CONTINUATION_PREFIX) + text[s:e], s, e)
            for s, e, starts in _morpheme_spans(mecab_input)
        ]
    # Mecab input with one placeholder per protected string, and for each of its
    # characters the span it stands for in ``text``.
    parts, char_spans = [], []
    for start, end, is_protected in spans:
        if is_protected:
            parts.append(_PLACEHOLDER)
            char_spans.append((start, end))
        else:
            parts.append(mecab_input[start:end])
            char_spans.extend((i, i + 1) for i in range(start, end))
    placeholder_input = "".join(parts)
    result = []
    for s, e, starts in _morpheme_spans(placeholder_input):
        start, end = char_spans[s][0], char_spans[e - 1][1]
        if e - s > 1 and any(end_ - start_ > 1 for start_, end_ in char_spans[s:e]):
            # A protected string glued into a longer morpheme: never seen with the
            # placeholder, but a special token must stay a token of its own.
            return _morphemes_by_part(text, spans)
        result.append(Morpheme(("" if starts else CONTINUATION_PREFIX) + text[start:end], start, end))
    return result


def _morphemes_by_part(text: str, spans: list[tuple[int, int, bool]]) -> list[Morpheme]:
    """Fallback: protected strings whole, each part between them analysed alone."""
    result = []
    for span_start, span_end, is_protected in spans:
        after_space = span_start == 0 or text[span_start - 1].isspace()
        if is_protected:
            morphemes = [(span_start, span_end, after_space)]
        else:
            part = text[span_start:span_end].translate(_TO_MECAB_INPUT)
            morphemes = [
                (span_start + s, span_start + e, after_space if s == 0 else starts)
                for s, e, starts in _morpheme_spans(part)
            ]
        result.extend(Morpheme(("" if starts else CONTINUATION_PREFIX) + text[s:e], s, e) for s, e, starts in morphemes)
    return result


def segment(text: str, protected: tuple[str, ...] = ()) -> str:
    """The Mecab step: ``"국가의 미래를"`` -> ``"국가 ##의 미래 ##를"``.

    Feed the result to the saved ``tokenizer.json`` (e.g. through
    ``transformers.PreTrainedTokenizerFast``) to get the same ids as
    :class:`bert_lm.tokenizer.korean_tokenizer.KoreanTokenizer`.
    """
    if (protected and any(p in text for p in protected)) or _NEEDS_SLOW_PATH.search(text):
        return " ".join(m.piece for m in morphemes_with_offsets(text, protected))
    marked = _marked_tagger().parse(text)
    # Every character comes back, plus one mark per morpheme; otherwise let the
    # slow path decide (it checks surfaces one by one).
    if len(marked) != len(text.rstrip(" ")) + marked.count(_MARK):
        return " ".join(m.piece for m in morphemes_with_offsets(text, protected))
    # " <mark>" opens a word; any other mark is a continuation.
    return (" " + marked).replace(" " + _MARK, " ").replace(_MARK, " " + CONTINUATION_PREFIX).strip(" ")


def segment_many(texts: list[str], protected: tuple[str, ...] = ()) -> list[str]:
    """:func:`segment` over a list."""
    return [segment(t, protected) for t in texts]

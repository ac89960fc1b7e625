"""Korean-aware sentence splitting for text that arrives as paragraphs (petitions).

Rules, in the order they are checked at each space between two words:
  * no split inside quotes or brackets (“...”, "...", ‘...’, (...), [...], 「...」);
  * split after sentence punctuation (``.``, ``?``, ``!``, and runs of them),
    together with any closing quotes or brackets that follow it, except after a
    few Latin abbreviations (``e.g.``, ``Mr.``) and single initials (``J. Kim``);
    decimals (``3.5``) never split because no space follows their point;
  * an ellipsis (``…``, ``...``) alone does not end a sentence: Korean writers use
    it mid-sentence; it does when the word before it ends in a final ending;
  * split after a word whose last morpheme Mecab tags ``EF`` (a sentence-final
    ending: 다, 요, 습니다, ...) even without punctuation, as comment and petition
    text often omits it.

Why not a library: kss (the usual Korean splitter) pulls in its own morphological
analyser and many dependencies for the same rules; we already ship Mecab, whose
``EF`` tag is the most reliable signal for unpunctuated sentence ends.
"""

from __future__ import annotations

import re
from functools import lru_cache

from bert_lm.corpus.mecab_tagger import last_pos_tag

_OPENERS = {"“": "”", "‘": "’", "(": ")", "[": "]", "{": "}", "「": "」", "『": "』", "《": "》", "〈": "〉"}
_CLOSERS = {v: k for k, v in _OPENERS.items()}
# Straight quotes open and close with the same character.
_TOGGLES = {'"', "'"}
_TERMINATORS = ".?!"
_ELLIPSES = ("…", "...")
_ABBREVIATIONS = {"e.g.", "i.e.", "etc.", "vs.", "mr.", "mrs.", "ms.", "dr.", "prof.", "no.", "st.", "p.", "pp."}
_TRAILING_CLOSERS = "”’\"')]}」』》〉"
_CONTENT_RE = re.compile(r"[가-힣A-Za-z0-9]")


# Out of context mecab-ko-dic often tags a final ㅂ니다/어요 as a connective
# ending (EC: 합니다 -> VV+EC, 좋아요 -> EC). An EC that ends in one of these
# surfaces is final in practice; connective ones (다고, 는데, 지만) do not end so.
_FINAL_SURFACES = ("니다", "니까", "요", "죠", "다")


@lru_cache(maxsize=200_000)
def _ends_with_final_ending(word: str) -> bool:
    core = word.rstrip(_TRAILING_CLOSERS + _TERMINATORS + "…~")
    # Only Hangul words can carry a Korean ending; skip Mecab for everything else.
    if not core or not "가" <= core[-1] <= "힣":
        return False
    tag = last_pos_tag(core)
    return tag == "EF" or (tag == "EC" and core.endswith(_FINAL_SURFACES))


def _ends_sentence(word: str) -> bool:
    stripped = word.rstrip(_TRAILING_CLOSERS)
    if not stripped:
        return False
    if stripped.endswith(_ELLIPSES):
        return _ends_with_final_ending(stripped.rstrip(".…"))
    if stripped[-1] in _TERMINATORS:
        lowered = stripped.lower()
        if lowered in _ABBREVIATIONS or re.fullmatch(r"[A-Za-z]\.", stripped):
            return False
        return True
    return _ends_with_final_ending(stripped)


def _update_depth(word: str, stack: list[str]) -> None:
    """Track open quotes/brackets across words; unbalanced closers are ignored."""
    for ch in word:
        if ch in _TOGGLES:
            if stack and stack[-1] == ch:
                stack.pop()
            else:
                stack.append(ch)
        elif ch in _OPENERS:
            stack.append(ch)
        elif ch in _CLOSERS and _CLOSERS[ch] in stack:
            while stack and stack.pop() != _CLOSERS[ch]:
                pass


def split_sentences(paragraph: str) -> list[str]:
    """Split a paragraph into sentences; whitespace inside sentences is kept as is."""
    sentences: list[str] = []
    stack: list[str] = []
    start = 0
    words = list(re.finditer(r"\S+", paragraph))
    for i, match in enumerate(words):
        word = match.group()
        _update_depth(word, stack)
        if sentences and start == match.start() and not _CONTENT_RE.search(word):
            # Laughter or emoticons right after a sentence end belong to that sentence.
            sentences[-1] = f"{sentences[-1]} {word}"
            start = words[i + 1].start() if i + 1 < len(words) else match.end()
            continue
        if i == len(words) - 1:
            break
        # A straight quote left open for a whole paragraph is more likely a stray
        # apostrophe than a quotation: do not let it block every split.
        if stack and not all(q in _TOGGLES for q in stack):
            continue
        if _ends_sentence(word):
            sentences.append(paragraph[start : match.end()].strip())
            start = words[i + 1].start()
            stack.clear()
    tail = paragraph[start:].strip()
    if tail:
        sentences.append(tail)
    return _merge_fragments(sentences)


def _merge_fragments(sentences: list[str]) -> list[str]:
    """Glue pieces with no syllable, letter or digit (ㅋㅋ, ^^, emoji) to the sentence
    before them: laughter after a sentence is part of it, not a sentence."""
    merged: list[str] = []
    for sentence in sentences:
        if merged and not _CONTENT_RE.search(sentence):
            merged[-1] = f"{merged[-1]} {sentence}"
        else:
            merged.append(sentence)
    return merged

"""Character-level KLUE tags <-> subword-token labels, and sliding windows.

KLUE NER is annotated per character; the model tags subword tokens. The bridge
is the tokenizer's character offsets (``encoding.offsets[i] = (start, end)`` into
the original text, special tokens excluded), so no string matching of pieces is
needed and ``[UNK]`` tokens need no special case.

Characters -> tokens (training labels)
    A token takes the tag of its first non-whitespace character. Every token is
    labelled, not only the first piece of a word: a piece continuing an entity gets
    ``I-X``. That keeps the CRF mask equal to the attention mask (pytorch-crf needs a
    mask that is on at position 0 and contiguous), so no gather/scatter of first
    pieces is needed. Tokens with no non-whitespace character (a bare ``▁`` piece or
    a zero-width token) take the continuation rule KLUE uses for spaces: ``I-X``
    between two parts of one ``X`` entity, else ``O``. Finally the token sequence is
    made valid IOB2 (an ``I-X`` not continuing ``X`` becomes ``B-X``, e.g. when the
    token holding the entity's first character started with a particle), so that a
    gold path never uses a transition the constrained CRF forbids.

Tokens -> characters (predictions)
    Every non-whitespace character of a token gets its tag, ``B-X`` only on the
    token's first such character. Characters no token covers (spaces, in practice)
    are ``I-X`` when the characters on both sides continue one ``X`` entity (KLUE's
    convention: ``<오후 8시:TI>`` tags the space ``I-TI``), else ``O``. The result is
    *not* repaired: an ``I-X`` a model predicts where no ``X`` entity is open stays
    as predicted, so that strict IOB2 scoring (seqeval, as KLUE's baseline scores
    raw predictions) does not count it as an entity; the constrained CRF never
    predicts one. With the official metric spaces are dropped
    before scoring (as KLUE's baseline does) so the space rule matters only for the
    round trip, which it makes exact: see ``tests/test_alignment.py``.

    An entity boundary inside a token cannot be represented (``김재원의`` as one
    token tags ``의`` as part of the person); :func:`span_recovery` measures how many
    gold entities a tokenizer can represent at all -- a ceiling on entity F1.

[CLS]/[SEP]
    :func:`window_example` puts ``[CLS]`` and ``[SEP]`` inside the CRF mask with label
    ``O`` (mask == attention mask, contiguous from position 0). ``O`` is always a
    legal predecessor of ``B-X`` and a legal successor of anything, so they cost the
    constrained CRF nothing; their predictions are sliced off (``pred[1:-1]``).

Long sentences
    :func:`make_windows` covers the tokens with overlapping windows; each token's
    prediction comes from the window in which it is most central
    (:func:`merge_window_predictions`), so no character is dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol, TypeVar

from finetune.ner.klue_ner import NerSentence, entity_spans

T = TypeVar("T")


class Encoding(Protocol):
    """What the aligner needs from a tokenizer's ``encode(text)``."""

    ids: list[int]
    offsets: list[tuple[int, int]]  # (start, end) into the original text, end exclusive


# ------------------------------------------------------------------------- helpers
def _entity_type(tag: str) -> str | None:
    return None if tag == "O" else tag[2:]


def repair_iob2(tags: Sequence[str]) -> list[str]:
    """Make a tag sequence valid IOB2: an ``I-X`` that does not continue an ``X``
    entity starts one (becomes ``B-X``), as conlleval reads such a tag."""
    repaired = list(tags)
    previous_type = None
    for i, tag in enumerate(repaired):
        entity_type = _entity_type(tag)
        if tag.startswith("I-") and entity_type != previous_type:
            repaired[i] = "B-" + entity_type
        previous_type = entity_type
    return repaired


def _fill_gaps(tags: list[str | None]) -> list[str]:
    """Give the ``None`` positions KLUE's space rule: ``I-X`` when the nearest tagged
    positions before and after continue one ``X`` entity, else ``O``."""
    filled: list[str] = []
    n = len(tags)
    i = 0
    while i < n:
        if tags[i] is not None:
            filled.append(tags[i])
            i += 1
            continue
        gap_end = i
        while gap_end < n and tags[gap_end] is None:
            gap_end += 1
        before = filled[-1] if filled else "O"
        after = tags[gap_end] if gap_end < n else "O"
        inside = before != "O" and after.startswith("I-") and _entity_type(after) == _entity_type(before)
        filled.extend([("I-" + _entity_type(after)) if inside else "O"] * (gap_end - i))
        i = gap_end
    return filled


def _check_offsets(text: str, encoding: Encoding) -> None:
    if len(encoding.ids) != len(encoding.offsets):
        raise ValueError(f"encoding has {len(encoding.ids)} ids but {len(encoding.offsets)} offsets")
    for start, end in encoding.offsets:
        if not 0 <= start <= end <= len(text):
            raise ValueError(
                f"token offsets ({start}, {end}) fall outside the text of {len(text)} characters; "
                "offsets must index the original text with special tokens excluded"
            )


# ------------------------------------------------------------- characters -> tokens
def char_tags_to_token_tags(text: str, tags: Sequence[str], encoding: Encoding) -> list[str]:
    """One tag per token (see the module docstring for the rule)."""
    if len(text) != len(tags):
        raise ValueError(f"{len(text)} characters but {len(tags)} tags")
    _check_offsets(text, encoding)
    token_tags: list[str | None] = []
    last_tag = "O"  # tag of the last token that labelled characters of its own
    covered_until = 0  # characters before this were already labelled by an earlier token
    for start, end in encoding.offsets:
        first = next((c for c in range(max(start, covered_until), end) if not text[c].isspace()), None)
        if first is not None:
            last_tag = tags[first]
            token_tags.append(last_tag)
            covered_until = max(covered_until, end)
        elif start < covered_until:
            # Another piece of characters an earlier token holds (byte-level pieces
            # of one character): it continues that token's entity.
            token_tags.append("O" if last_tag == "O" else "I-" + last_tag[2:])
        else:
            # Only whitespace, or zero width: decided by the space rule below.
            token_tags.append(None)
    return repair_iob2(_fill_gaps(token_tags))


def char_tags_to_token_labels(
    text: str, tags: Sequence[str], encoding: Encoding, label2id: Mapping[str, int]
) -> list[int]:
    """Training labels (ids) for the tokens of ``encoding``; see the module docstring."""
    return [label2id[tag] for tag in char_tags_to_token_tags(text, tags, encoding)]


# ------------------------------------------------------------- tokens -> characters
def token_predictions_to_char_tags(text: str, encoding: Encoding, token_tags: Sequence[str]) -> list[str]:
    """One tag per character of ``text`` from one predicted tag per token."""
    _check_offsets(text, encoding)
    if len(token_tags) != len(encoding.offsets):
        raise ValueError(f"{len(token_tags)} predicted tags for {len(encoding.offsets)} tokens")
    char_tags: list[str | None] = [None] * len(text)
    for (start, end), tag in zip(encoding.offsets, token_tags, strict=True):
        entity_type = _entity_type(tag)
        first = True
        for c in range(start, end):
            if text[c].isspace() or char_tags[c] is not None:
                continue  # spaces follow the gap rule; a character keeps its first token's tag
            if entity_type is None:
                char_tags[c] = "O"
            else:
                char_tags[c] = (tag[:2] if first else "I-") + entity_type
            first = False
    return _fill_gaps(char_tags)


def span_recovery(sentences: Iterable[NerSentence], encode: Callable[[str], Encoding]) -> tuple[int, int]:
    """(gold entities, entities that survive chars -> tokens -> chars) for a tokenizer.

    The ratio is the best entity recall any model on these tokens can reach.
    """
    total = recovered = 0
    for sentence in sentences:
        encoding = encode(sentence.text)
        token_tags = char_tags_to_token_tags(sentence.text, sentence.tags, encoding)
        round_trip = token_predictions_to_char_tags(sentence.text, encoding, token_tags)
        gold = set(entity_spans(sentence.tags))
        total += len(gold)
        recovered += len(gold & set(entity_spans(round_trip)))
    return total, recovered


# ----------------------------------------------------------------- sliding windows
def make_windows(n_tokens: int, max_tokens: int, stride: int) -> list[tuple[int, int]]:
    """Token spans ``(start, end)`` covering ``range(n_tokens)``, each at most
    ``max_tokens`` long (the model length minus [CLS] and [SEP]).

    ``stride`` is the step between window starts, so consecutive windows overlap by
    ``max_tokens - stride`` tokens. The last window is moved back to end exactly at
    ``n_tokens``, so every window is full and the tail keeps left context. A text
    with no tokens gets one empty window: every sentence yields at least one example.
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    if not 1 <= stride <= max_tokens:
        raise ValueError(f"stride must be in [1, max_tokens={max_tokens}], got {stride}")
    if n_tokens < 0:
        raise ValueError(f"n_tokens must be >= 0, got {n_tokens}")
    if n_tokens <= max_tokens:
        return [(0, n_tokens)]
    windows = []
    start = 0
    while start + max_tokens < n_tokens:
        windows.append((start, start + max_tokens))
        start += stride
    windows.append((n_tokens - max_tokens, n_tokens))
    return windows


def window_owners(n_tokens: int, windows: Sequence[tuple[int, int]]) -> list[int]:
    """For each token, the index of the window whose prediction it keeps: the one in
    which it is most central (largest distance to the nearer window edge), the
    earlier window on ties. Raises if a token is in no window."""
    best = [(-1, -1)] * n_tokens  # (centrality, window index)
    for w, (start, end) in enumerate(windows):
        for i in range(start, end):
            centrality = min(i - start, end - 1 - i)
            if centrality > best[i][0]:
                best[i] = (centrality, w)
    missing = [i for i, (_, w) in enumerate(best) if w < 0]
    if missing:
        raise ValueError(f"tokens {missing[:10]} are covered by no window")
    return [w for _, w in best]


def merge_window_predictions(
    n_tokens: int, windows: Sequence[tuple[int, int]], window_predictions: Sequence[Sequence[T]]
) -> list[T]:
    """One prediction per token from per-window predictions (special tokens already
    stripped: ``window_predictions[w]`` has ``end - start`` items for window ``w``)."""
    if len(windows) != len(window_predictions):
        raise ValueError(f"{len(window_predictions)} window predictions for {len(windows)} windows")
    for (start, end), predictions in zip(windows, window_predictions, strict=True):
        if len(predictions) != end - start:
            raise ValueError(f"window ({start}, {end}) has {len(predictions)} predictions, expected {end - start}")
    owners = window_owners(n_tokens, windows)
    return [window_predictions[w][i - windows[w][0]] for i, w in enumerate(owners)]


def window_example(
    token_ids: Sequence[int],
    token_tags: Sequence[str] | None,
    window: tuple[int, int],
    *,
    cls_id: int,
    sep_id: int,
    label2id: Mapping[str, int],
) -> tuple[list[int], list[int] | None]:
    """Model input for one window: ``[CLS] ids[start:end] [SEP]`` and, when tags are
    given, labels ``O, tags..., O``. The window's tags are repaired to IOB2 (a window
    that starts inside an entity starts with ``B-X``), so the gold path stays legal
    for a constrained CRF. Predictions for the window's tokens are ``pred[1:-1]``."""
    start, end = window
    input_ids = [cls_id, *token_ids[start:end], sep_id]
    if token_tags is None:
        return input_ids, None
    outside = label2id["O"]
    window_tags = repair_iob2(token_tags[start:end])
    return input_ids, [outside, *(label2id[t] for t in window_tags), outside]

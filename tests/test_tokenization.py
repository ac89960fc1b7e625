"""Properties of the Mecab-aware WordPiece tokenizer and its plain baseline."""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bert_lm import mecab_segmenter
from bert_lm.tokenization import SPECIAL_TOKENS, KoreanTokenizer

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
def test_offsets_slice_back_to_the_original_text(kind, text, request):
    tokenizer = request.getfixturevalue(kind)
    encoding = tokenizer.encode(text)
    assert len(encoding.ids) == len(encoding.offsets)
    for token, (start, end) in zip(encoding.tokens, encoding.offsets, strict=True):
        piece = text[start:end]
        assert piece and not piece.isspace()
        if token != "[UNK]":
            assert piece == token.removeprefix("##")
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
    lines = sample_lines * 8  # past the size where the pool is used
    single = KoreanTokenizer.train(sample_lines, vocab_size=2000, num_workers=1, show_progress=False)
    expected = single.encode_ids_batch(lines)
    mecab_segmenter._SEGMENTED_CACHE.clear()
    mecab_segmenter._MORPHEME_CACHE.clear()
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
        # Thousands of new distinct words take the pool path.
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

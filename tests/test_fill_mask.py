"""Fill-mask through our function and command, and through HF's pipeline on the
exported directory with the Mecab step run around it."""

import pytest
import torch

from bert_lm.fill_mask import fill_mask, load_for_fill_mask, main
from bert_lm.models.bert import BertConfig, BertForPreTraining
from bert_lm.models.hf_interop import export_hf


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory, mecab_tokenizer):
    torch.manual_seed(0)
    model = BertForPreTraining(BertConfig(vocab_size=mecab_tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1,
                                          num_attention_heads=2, intermediate_size=64))
    tokenizer_dir = tmp_path_factory.mktemp("tok")
    mecab_tokenizer.save(tokenizer_dir)
    return export_hf(model.eval(), tmp_path_factory.mktemp("export"), tokenizer_dir)


def test_returns_k_candidates_per_mask(export_dir):
    model, tokenizer = load_for_fill_mask(export_dir)
    results = fill_mask(model, tokenizer, "이순신은 [MASK] 중기의 [MASK]이다.", top_k=4)
    assert len(results) == 2 and all(len(candidates) == 4 for candidates in results)
    scores = [c.score for c in results[0]]
    assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1
    first = results[0][0]
    assert first.text == "이순신은 " + first.token.removeprefix("##") + " 중기의 [MASK]이다."


def test_hf_pipeline_agrees_on_segmented_input(export_dir):
    from transformers import pipeline

    model, tokenizer = load_for_fill_mask(export_dir)
    text = "이순신은 [MASK] 중기의 무신이다."
    ours = [c.token for c in fill_mask(model, tokenizer, text, top_k=3)[0]]
    hf = pipeline("fill-mask", model=str(export_dir), tokenizer=str(export_dir), device="cpu", top_k=3)
    theirs = [r["token_str"].replace(" ", "") for r in hf(tokenizer.segment(text))]
    assert theirs == ours


def test_command_prints_candidates(export_dir, capsys):
    assert main([str(export_dir), "국가의 [MASK]를 위하여", "--top-k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "국가의 [MASK]를 위하여" and len([line for line in lines if "[MASK] 1 #" in line]) == 2


def test_text_without_mask_is_a_clear_error(export_dir, capsys):
    assert main([str(export_dir), "마스크가 없는 문장"]) == 1
    assert "no [MASK]" in capsys.readouterr().err

"""Export to and import from HF directories, checked by loading them with transformers itself."""

from __future__ import annotations

import json
import logging

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

from bert_lm.models.bert import BertConfig, BertForPreTraining
from bert_lm.models.hf_interop import export_hf, import_hf

TINY = dict(vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)


def hf_config(config: BertConfig) -> transformers.BertConfig:
    return transformers.BertConfig(**config.to_hf_dict(), attn_implementation="sdpa")


def padded_batch(vocab_size: int):
    input_ids = torch.randint(1, vocab_size, (3, 10), generator=torch.Generator().manual_seed(0))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 6:] = 0
    attention_mask[2, 3:] = 0
    input_ids = input_ids * attention_mask
    token_type_ids = torch.zeros_like(input_ids)
    token_type_ids[:, 5:] = 1
    return input_ids, token_type_ids * attention_mask, attention_mask


def trained_looking_model(config: BertConfig) -> BertForPreTraining:
    """Random weights far from init (non-zero biases, LayerNorm != identity) so every key matters."""
    torch.manual_seed(0)
    model = BertForPreTraining(config).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    return model


@pytest.mark.parametrize("hf_class", [transformers.BertForPreTraining, transformers.BertForMaskedLM])
def test_export_loads_in_hf_with_same_logits(tmp_path, hf_class):
    config = BertConfig(**TINY)
    ours = trained_looking_model(config)
    tokenizer_dir = tmp_path / "tokenizer"
    tokenizer_dir.mkdir()
    (tokenizer_dir / "vocab.txt").write_text("[PAD]\n[UNK]\n")
    (tokenizer_dir / "tokenizer_config.json").write_text("{}")
    out_dir = export_hf(ours, tmp_path / "export", tokenizer_dir=tokenizer_dir)

    assert (out_dir / "vocab.txt").read_text() == "[PAD]\n[UNK]\n"
    assert (out_dir / "tokenizer_config.json").exists()
    saved = json.loads((out_dir / "config.json").read_text())
    assert saved["model_type"] == "bert" and saved["architectures"] == ["BertForPreTraining"]

    hf, loading_info = hf_class.from_pretrained(out_dir, output_loading_info=True, attn_implementation="sdpa")
    assert loading_info["missing_keys"] == set() or not loading_info["missing_keys"]
    if hf_class is transformers.BertForPreTraining:
        assert not loading_info["unexpected_keys"]
    else:  # a masked-LM model has no pooler / NSP head: those (and only those) are left over
        assert all("pooler" in k or "seq_relationship" in k for k in loading_info["unexpected_keys"])
    assert not loading_info["mismatched_keys"]

    hf.eval()
    input_ids, token_type_ids, attention_mask = padded_batch(config.vocab_size)
    with torch.no_grad():
        reference = hf(input_ids=input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask)
        mlm_logits, nsp_logits = ours.full_mlm_logits(input_ids, token_type_ids, attention_mask)
    real = attention_mask.bool()
    hf_mlm = reference.prediction_logits if hf_class is transformers.BertForPreTraining else reference.logits
    torch.testing.assert_close(mlm_logits[real], hf_mlm[real], atol=1e-5, rtol=1e-5)
    if hf_class is transformers.BertForPreTraining:
        torch.testing.assert_close(nsp_logits, reference.seq_relationship_logits, atol=1e-5, rtol=1e-5)


def test_import_hf_pretraining_checkpoint_matches(tmp_path):
    config = BertConfig(**TINY)
    torch.manual_seed(0)
    hf = transformers.BertForPreTraining(hf_config(config)).eval()
    hf.save_pretrained(tmp_path)
    ours = import_hf(tmp_path, expected_vocab_size=config.vocab_size).eval()
    assert ours.config == config
    input_ids, token_type_ids, attention_mask = padded_batch(config.vocab_size)
    with torch.no_grad():
        reference = hf(input_ids=input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask)
        mlm_logits, nsp_logits = ours.full_mlm_logits(input_ids, token_type_ids, attention_mask)
    real = attention_mask.bool()
    torch.testing.assert_close(mlm_logits[real], reference.prediction_logits[real], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(nsp_logits, reference.seq_relationship_logits, atol=1e-5, rtol=1e-5)
    # Tying survives the import.
    assert ours.cls.predictions.decoder.weight is ours.bert.embeddings.word_embeddings.weight


def test_export_import_round_trip(tmp_path):
    ours = trained_looking_model(BertConfig(**TINY))
    again = import_hf(export_hf(ours, tmp_path))
    for (key, a), (_, b) in zip(ours.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(a, b), key


def test_import_masked_lm_checkpoint_initialises_nsp(tmp_path, caplog):
    config = BertConfig(**TINY)
    torch.manual_seed(0)
    hf = transformers.BertForMaskedLM(hf_config(config)).eval()
    hf.save_pretrained(tmp_path)
    with caplog.at_level(logging.WARNING, logger="bert_lm.models.hf_interop"):
        ours = import_hf(tmp_path).eval()
    for key in ("bert.pooler.dense.weight", "cls.seq_relationship.weight"):
        assert key in caplog.text
    assert "word_embeddings" not in caplog.text
    input_ids, token_type_ids, attention_mask = padded_batch(config.vocab_size)
    with torch.no_grad():
        reference = hf(input_ids=input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask).logits
        mlm_logits, _ = ours.full_mlm_logits(input_ids, token_type_ids, attention_mask)
    real = attention_mask.bool()
    torch.testing.assert_close(mlm_logits[real], reference[real], atol=1e-5, rtol=1e-5)


def test_import_with_wrong_vocab_names_both_sizes(tmp_path):
    export_hf(BertForPreTraining(BertConfig(**TINY)), tmp_path)
    with pytest.raises(ValueError, match=rf"{tmp_path}.*vocab_size=97.*expected_vocab_size=120"):
        import_hf(tmp_path, expected_vocab_size=120)


def test_import_legacy_bin_with_position_ids(tmp_path):
    """Old checkpoints: pytorch_model.bin, a saved position_ids buffer, tied decoder keys present."""
    ours = trained_looking_model(BertConfig(**TINY))
    export_hf(ours, tmp_path)
    state = load_file(str(tmp_path / "model.safetensors"))
    (tmp_path / "model.safetensors").unlink()
    state["bert.embeddings.position_ids"] = torch.arange(128)[None, :]
    state["cls.predictions.decoder.weight"] = state["bert.embeddings.word_embeddings.weight"].clone()
    state["cls.predictions.decoder.bias"] = state["cls.predictions.bias"].clone()
    torch.save(state, tmp_path / "pytorch_model.bin")
    again = import_hf(tmp_path)
    assert "bert.embeddings.position_ids" not in again.state_dict()
    for key, tensor in ours.state_dict().items():
        assert torch.equal(tensor, again.state_dict()[key]), key


def test_import_shape_mismatch_names_the_key(tmp_path):
    export_hf(BertForPreTraining(BertConfig(**TINY)), tmp_path)
    state = load_file(str(tmp_path / "model.safetensors"))
    state["bert.encoder.layer.1.intermediate.dense.bias"] = torch.zeros(65)
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match=r"bert\.encoder\.layer\.1\.intermediate\.dense\.bias.*\(65,\).*\(64,\)"):
        import_hf(tmp_path)


def test_import_without_encoder_layers_is_an_error(tmp_path):
    # A checkpoint with fewer layers than its config.json says (or a truncated
    # file) would otherwise finetune a partly random encoder without a word.
    export_hf(BertForPreTraining(BertConfig(**TINY)), tmp_path)
    state = load_file(str(tmp_path / "model.safetensors"))
    state = {k: v for k, v in state.items() if not k.startswith("bert.encoder.layer.1.")}
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match=rf"{tmp_path}.*lacks \d+ encoder weights.*bert\.encoder\.layer\.1\."):
        import_hf(tmp_path)

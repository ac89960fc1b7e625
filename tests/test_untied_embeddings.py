"""Untied output embeddings (``model.tie_word_embeddings=false``, HF's ``tie_word_embeddings``):
checkpoints transformers writes that way load here and compute what transformers computes, our
exports load back in transformers with no missing or unexpected keys, and training leaves the
input rows of pieces absent from a batch alone (the reason to untie them)."""

from __future__ import annotations

import json

import pytest
import torch
import transformers
from safetensors import safe_open

from bert_lm.models.bert import BertConfig, BertForPreTraining
from bert_lm.models.electra import ElectraForPretraining
from bert_lm.models.hf_interop import export_hf, import_hf

SIZES = dict(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
TOLERANCE = 1e-5

# family -> (transformers config class, masked-LM class, extra config, HF key of the output projection)
FAMILIES = {
    "bert": (transformers.BertConfig, transformers.BertForPreTraining, {}, "cls.predictions.decoder.weight"),
    "roberta": (
        transformers.RobertaConfig,
        transformers.RobertaForMaskedLM,
        dict(pad_token_id=1, bos_token_id=0, eos_token_id=2, type_vocab_size=1, max_position_embeddings=14),
        "lm_head.decoder.weight",
    ),
    "roberta-prelayernorm": (
        transformers.RobertaPreLayerNormConfig,
        transformers.RobertaPreLayerNormForMaskedLM,
        dict(pad_token_id=1, bos_token_id=0, eos_token_id=2, type_vocab_size=1, max_position_embeddings=14),
        "lm_head.decoder.weight",
    ),
    "electra": (
        transformers.ElectraConfig,
        transformers.ElectraForMaskedLM,
        dict(embedding_size=16),
        "generator_lm_head.weight",
    ),
}


def batch(pad_id: int):
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(5, SIZES["vocab_size"], (2, 10), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    input_ids[1, 6:] = pad_id
    attention_mask[1, 6:] = 0
    return input_ids, attention_mask


def hf_mlm_logits(model, input_ids, attention_mask):
    with torch.no_grad():
        out = model.eval()(input_ids=input_ids, attention_mask=attention_mask)
    return out.prediction_logits if hasattr(out, "prediction_logits") else out.logits


def our_mlm_logits(model, input_ids, attention_mask):
    with torch.no_grad():
        return model.eval().full_mlm_logits(input_ids, attention_mask=attention_mask)[0]


def untied_hf_checkpoint(tmp_path, family):
    config_class, model_class, extra, decoder_key = FAMILIES[family]
    torch.manual_seed(0)
    model = model_class(config_class(**SIZES, **extra, tie_word_embeddings=False)).eval()
    with torch.no_grad():  # as trained: the decoder's bias (the one transformers computes with) is not zero
        model.get_output_embeddings().bias.normal_()
    model.save_pretrained(tmp_path / "hf")
    return model, tmp_path / "hf", decoder_key


@pytest.mark.parametrize("family", list(FAMILIES))
def test_untied_checkpoints_load_and_export_with_transformers_logits(tmp_path, family):
    hf_model, hf_dir, decoder_key = untied_hf_checkpoint(tmp_path, family)
    ours = import_hf(hf_dir)
    assert ours.config.tie_word_embeddings is False
    decoder, embeddings = ours.cls.predictions.decoder.weight, ours.bert.embeddings.word_embeddings.weight
    assert decoder is not embeddings and not torch.equal(decoder, embeddings)

    input_ids, attention_mask = batch(pad_id=ours.config.pad_token_id)
    real = attention_mask.bool()
    theirs = hf_mlm_logits(hf_model, input_ids, attention_mask)
    assert (our_mlm_logits(ours, input_ids, attention_mask)[real] - theirs[real]).abs().max() <= TOLERANCE

    export = export_hf(ours, tmp_path / "export")
    assert json.loads((export / "config.json").read_text())["tie_word_embeddings"] is False
    with safe_open(str(export / "model.safetensors"), "pt") as f:
        assert decoder_key in set(f.keys())
    reloaded, info = FAMILIES[family][1].from_pretrained(export, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert (hf_mlm_logits(reloaded, input_ids, attention_mask)[real] - theirs[real]).abs().max() <= TOLERANCE


def test_a_tied_config_with_a_different_decoder_is_refused_naming_the_fix(tmp_path):
    _, hf_dir, decoder_key = untied_hf_checkpoint(tmp_path, "roberta")
    config = json.loads((hf_dir / "config.json").read_text())
    del config["tie_word_embeddings"]  # absent means tied, as in transformers
    (hf_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=f"{decoder_key} differs.*tie_word_embeddings=false"):
        import_hf(hf_dir)


@pytest.mark.parametrize("tie", [True, False])
def test_training_moves_input_rows_of_absent_pieces_only_when_tied(tie):
    torch.manual_seed(0)
    model = BertForPreTraining(BertConfig(**SIZES, tie_word_embeddings=tie))
    input_ids = torch.randint(5, 60, (4, 10))  # ids 60..119 never appear in the input
    labels = input_ids.clone()
    labels[:, ::2] = -100
    embeddings = model.bert.embeddings.word_embeddings.weight
    before_input, before_output = embeddings.detach().clone(), model.cls.predictions.decoder.weight.detach().clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    model(input_ids, mlm_labels=labels).loss.backward()
    optimizer.step()
    absent = slice(60, None)
    # Every softmax step pushes the output rows of absent pieces; untied, their input rows stay as drawn.
    assert not torch.equal(model.cls.predictions.decoder.weight[absent], before_output[absent])
    assert torch.equal(embeddings[absent], before_input[absent]) is (not tie)
    assert (model.cls.predictions.decoder.weight is embeddings) is tie


def test_untied_electra_generator_keeps_its_own_output_projection():
    config = BertConfig(**SIZES, model_type="electra", embedding_size=16, tie_word_embeddings=False)
    model = ElectraForPretraining(config, generator_size=0.5)
    shared = model.discriminator.embeddings.word_embeddings.weight
    assert model.generator.bert.embeddings.word_embeddings.weight is shared  # ELECTRA shares the inputs
    assert model.generator.cls.predictions.decoder.weight is not shared
    tied = ElectraForPretraining(BertConfig(**SIZES, model_type="electra", embedding_size=16), generator_size=0.5)
    assert tied.generator.cls.predictions.decoder.weight is tied.discriminator.embeddings.word_embeddings.weight


def test_a_non_boolean_setting_is_refused_naming_the_key():
    with pytest.raises(ValueError, match="tie_word_embeddings='no'"):
        BertConfig(**SIZES, tie_word_embeddings="no")

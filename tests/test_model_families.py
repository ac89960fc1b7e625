"""RoBERTa and ELECTRA checkpoints written by transformers itself load into our model and
compute what transformers computes; our exports of each family load back with no missing or
unexpected keys and the same logits."""

from __future__ import annotations

import logging

import pytest
import torch
import transformers
from safetensors import safe_open

from bert_lm.models.bert import BertConfig
from bert_lm.models.hf_interop import export_hf, import_hf

SIZES = dict(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
TOLERANCE = 1e-5


def batch(pad_id: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, SIZES["vocab_size"], (3, 12), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    input_ids[1, 8:] = pad_id  # right padding, as our collators pad
    attention_mask[1, 8:] = 0
    input_ids[2, 5:] = pad_id
    attention_mask[2, 5:] = 0
    return input_ids, attention_mask


def save(model, directory):
    model.eval()
    model.save_pretrained(directory)
    return directory


def roberta_mlm(tmp_path):
    config = transformers.RobertaConfig(
        **SIZES, max_position_embeddings=12 + 2, pad_token_id=1, bos_token_id=0, eos_token_id=2, type_vocab_size=1
    )
    torch.manual_seed(0)
    return transformers.RobertaForMaskedLM(config), save(transformers.RobertaForMaskedLM(config), tmp_path / "r")


def electra_pair(tmp_path):
    torch.manual_seed(0)
    common = dict(vocab_size=SIZES["vocab_size"], num_hidden_layers=2, embedding_size=16, max_position_embeddings=32)
    discriminator = transformers.ElectraForPreTraining(
        transformers.ElectraConfig(**common, hidden_size=32, num_attention_heads=2, intermediate_size=64)
    )
    generator = transformers.ElectraForMaskedLM(
        transformers.ElectraConfig(**common, hidden_size=16, num_attention_heads=1, intermediate_size=32)
    )
    return save(discriminator, tmp_path / "discriminator"), save(generator, tmp_path / "generator")


def hf_logits(hf_dir, cls, input_ids, attention_mask):
    model = cls.from_pretrained(hf_dir).eval()
    with torch.no_grad():
        return model(input_ids=input_ids, attention_mask=attention_mask).logits


def our_mlm_logits(model, input_ids, attention_mask):
    model.eval()
    with torch.no_grad():
        return model.full_mlm_logits(input_ids, attention_mask=attention_mask)[0]


def test_roberta_masked_lm_matches_transformers(tmp_path):
    _, hf_dir = roberta_mlm(tmp_path)
    ours = import_hf(hf_dir)
    assert ours.config.model_type == "roberta" and ours.config.max_sequence_length == 12
    input_ids, attention_mask = batch(pad_id=1)
    theirs = hf_logits(hf_dir, transformers.RobertaForMaskedLM, input_ids, attention_mask)
    real = attention_mask.bool()
    assert (our_mlm_logits(ours, input_ids, attention_mask)[real] - theirs[real]).abs().max() <= TOLERANCE


def test_roberta_positions_start_after_the_pad_id(tmp_path):
    _, hf_dir = roberta_mlm(tmp_path)
    ours = import_hf(hf_dir)
    with pytest.raises(ValueError, match="max_position_embeddings=14"):
        ours.bert(torch.full((1, 13), 7))  # 13 tokens need positions 2..14: one past the table


def test_electra_generator_matches_transformers(tmp_path):
    _, generator_dir = electra_pair(tmp_path)
    ours = import_hf(generator_dir)
    assert ours.config.embedding_dim == 16 and ours.config.hidden_size == 16
    input_ids, attention_mask = batch(pad_id=0)
    theirs = hf_logits(generator_dir, transformers.ElectraForMaskedLM, input_ids, attention_mask)
    real = attention_mask.bool()
    assert (our_mlm_logits(ours, input_ids, attention_mask)[real] - theirs[real]).abs().max() <= TOLERANCE


def test_electra_discriminator_encoder_matches_transformers(tmp_path, caplog):
    discriminator_dir, _ = electra_pair(tmp_path)
    with caplog.at_level(logging.WARNING):
        ours = import_hf(discriminator_dir)  # no MLM head in a discriminator: fresh, with a warning
    assert "cls.predictions" in caplog.text
    assert hasattr(ours.bert, "embeddings_project")  # embedding 16 -> hidden 32
    input_ids, attention_mask = batch(pad_id=0)
    electra = transformers.ElectraModel.from_pretrained(discriminator_dir).eval()
    ours.eval()
    with torch.no_grad():
        theirs = electra(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mine, _ = ours.bert(input_ids, attention_mask=attention_mask)
    real = attention_mask.bool()
    assert (mine[real] - theirs[real]).abs().max() <= TOLERANCE


@pytest.mark.parametrize(
    ("family", "hf_class"),
    [("roberta", transformers.RobertaForMaskedLM), ("electra", transformers.ElectraForMaskedLM)],
)
def test_export_stays_in_its_family_and_loads_cleanly(tmp_path, family, hf_class):
    hf_dir = roberta_mlm(tmp_path)[1] if family == "roberta" else electra_pair(tmp_path)[1]
    ours = import_hf(hf_dir)
    export = export_hf(ours, tmp_path / "export")
    with safe_open(str(export / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert all(k.startswith((family + ".", "lm_head.", "generator_")) for k in keys), sorted(keys)[:5]
    model, info = hf_class.from_pretrained(export, output_loading_info=True)
    assert not info["missing_keys"], info
    assert not info["unexpected_keys"], info
    input_ids, attention_mask = batch(pad_id=ours.config.pad_token_id)
    real = attention_mask.bool()
    theirs = hf_logits(export, hf_class, input_ids, attention_mask)
    assert (our_mlm_logits(ours, input_ids, attention_mask)[real] - theirs[real]).abs().max() <= TOLERANCE


@pytest.mark.parametrize(
    ("change", "key"),
    [({"model_type": "xlnet"}, "model_type='xlnet'"), ({"position_embedding_type": "relative_key"}, "relative_key")],
)
def test_what_cannot_work_is_refused_naming_the_key(tmp_path, change, key):
    _, hf_dir = roberta_mlm(tmp_path)
    import json

    config = json.loads((hf_dir / "config.json").read_text())
    (hf_dir / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(ValueError, match=key):
        import_hf(hf_dir)


def test_roberta_config_keeps_its_traits():
    config = BertConfig(**SIZES, model_type="roberta", pad_token_id=1, type_vocab_size=1, max_position_embeddings=514)
    assert config.max_sequence_length == 512
    hf = transformers.RobertaConfig(**config.to_hf_dict())
    assert hf.pad_token_id == 1 and hf.type_vocab_size == 1 and hf.architectures == ["RobertaForMaskedLM"]


def test_roberta_prelayernorm_matches_transformers_and_exports_in_its_layout(tmp_path):
    config = transformers.RobertaPreLayerNormConfig(
        **SIZES, max_position_embeddings=12 + 2, pad_token_id=1, bos_token_id=0, eos_token_id=2, type_vocab_size=1
    )
    torch.manual_seed(0)
    hf_dir = save(transformers.RobertaPreLayerNormForMaskedLM(config), tmp_path / "preln")
    ours = import_hf(hf_dir)
    assert ours.config.pre_layer_norm and hasattr(ours.bert, "LayerNorm")
    input_ids, attention_mask = batch(pad_id=1)
    real = attention_mask.bool()
    theirs = hf_logits(hf_dir, transformers.RobertaPreLayerNormForMaskedLM, input_ids, attention_mask)
    assert (our_mlm_logits(ours, input_ids, attention_mask)[real] - theirs[real]).abs().max() <= TOLERANCE
    export = export_hf(ours, tmp_path / "export")
    model, info = transformers.AutoModelForMaskedLM.from_pretrained(export, output_loading_info=True)
    assert type(model).__name__ == "RobertaPreLayerNormForMaskedLM"
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    again = hf_logits(export, transformers.RobertaPreLayerNormForMaskedLM, input_ids, attention_mask)
    assert (again[real] - theirs[real]).abs().max() <= TOLERANCE


def test_a_prelayernorm_model_trained_from_scratch_exports_cleanly(tmp_path):
    from bert_lm.models.bert import BertForPreTraining

    config = BertConfig(**SIZES, model_type="roberta-prelayernorm", pad_token_id=1, type_vocab_size=1,
                        max_position_embeddings=14)
    ours = BertForPreTraining(config).eval()
    export = export_hf(ours, tmp_path / "export")
    input_ids, attention_mask = batch(pad_id=1)
    real = attention_mask.bool()
    theirs = hf_logits(export, transformers.RobertaPreLayerNormForMaskedLM, input_ids, attention_mask)
    assert (our_mlm_logits(ours, input_ids, attention_mask)[real] - theirs[real]).abs().max() <= TOLERANCE


@pytest.mark.parametrize(
    "model_type, hf_class",
    [("bert", transformers.BertForMaskedLM), ("roberta-prelayernorm", transformers.RobertaPreLayerNormForMaskedLM)],
)
def test_training_gradients_match_transformers(tmp_path, model_type, hf_class):
    """Training, not only inference: our sparse MLM head, fused QKV and fused cross-entropy give
    transformers' loss and every parameter's gradient (a wrong backward would train slowly, not fail)."""
    from bert_lm.models.bert import IGNORE_INDEX, BertForPreTraining
    from bert_lm.models.families import FAMILIES, to_theirs

    roberta = model_type.startswith("roberta")
    config = BertConfig(**SIZES, model_type=model_type, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                        pad_token_id=1 if roberta else 0, type_vocab_size=1 if roberta else 2,
                        max_position_embeddings=14 if roberta else 12)
    torch.manual_seed(0)
    ours = BertForPreTraining(config)
    with torch.no_grad():  # away from init's zero biases and unit LayerNorms, so every term is exercised
        for parameter in ours.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    export_hf(ours, tmp_path / "export")
    theirs = hf_class.from_pretrained(tmp_path / "export", attn_implementation="eager")
    ours.train(), theirs.train()
    input_ids, attention_mask = batch(config.pad_token_id)
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    masked = (torch.rand(input_ids.shape, generator=torch.Generator().manual_seed(1)) < 0.4) & attention_mask.bool()
    labels[masked] = input_ids[masked]
    input_ids = input_ids.masked_fill(masked, 4)
    our_loss = ours(input_ids, None, attention_mask, mlm_labels=labels).mlm_loss
    their_loss = theirs(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
    our_loss.backward(), their_loss.backward()
    torch.testing.assert_close(our_loss, their_loss, atol=TOLERANCE, rtol=0)
    their_parameters = dict(theirs.named_parameters())
    compared = 0
    for name, parameter in ours.named_parameters():
        their_name = to_theirs(FAMILIES[model_type], name)
        if parameter.grad is None or their_name is None:
            continue  # NSP head and pooler: no MLM gradient on either side
        # The key bias shifts every score of a query equally, so softmax cancels it: its gradient
        # is rounding noise on both sides, comparable only in absolute terms.
        tolerance = dict(atol=1e-6, rtol=0) if name.endswith("key.bias") else dict(atol=1e-6, rtol=1e-4)
        torch.testing.assert_close(parameter.grad, their_parameters[their_name].grad, **tolerance, msg=name)
        compared += 1
    assert compared >= 2 + 16 * config.num_hidden_layers  # embeddings, every layer, the head

"""Our BERT against HF transformers' BertForPreTraining as the reference: same state-dict keys,
same logits, padding invariance, the sparse MLM loss against dense cross-entropy, config checks,
and a tiny model overfitting one batch."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
import transformers

from bert_lm.models.bert import (
    IGNORE_INDEX,
    BertConfig,
    BertForPreTraining,
    BertModel,
    softmax_cross_entropy,
    training_matmul_flops,
)

TINY = dict(vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)


def hf_model(config: BertConfig) -> transformers.BertForPreTraining:
    hf_config = transformers.BertConfig(**config.to_hf_dict(), attn_implementation="sdpa")
    return transformers.BertForPreTraining(hf_config)


def padded_batch(vocab_size: int, lengths=(12, 7, 3), seed: int = 0):
    """(input_ids, token_type_ids, attention_mask), each (B, T); pad id 0 after each length."""
    generator = torch.Generator().manual_seed(seed)
    batch, seq_len = len(lengths), max(lengths)
    input_ids = torch.randint(1, vocab_size, (batch, seq_len), generator=generator)
    attention_mask = (torch.arange(seq_len)[None, :] < torch.tensor(lengths)[:, None]).long()
    input_ids = input_ids * attention_mask
    token_type_ids = (torch.arange(seq_len)[None, :] >= torch.tensor(lengths)[:, None] // 2).long() * attention_mask
    return input_ids, token_type_ids, attention_mask


def mlm_labels_for(input_ids: torch.Tensor, attention_mask: torch.Tensor, rate: float = 0.3, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    chosen = (torch.rand(input_ids.shape, generator=generator) < rate) & attention_mask.bool()
    return torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE_INDEX))


def test_state_dict_keys_match_hf():
    config = BertConfig(**TINY)
    ours = BertForPreTraining(config)
    assert list(ours.state_dict()) == list(hf_model(config).state_dict())
    # The decoder is tied, not a copy: one tensor for embeddings and output projection.
    assert ours.cls.predictions.decoder.weight is ours.bert.embeddings.word_embeddings.weight
    assert ours.cls.predictions.decoder.bias is ours.cls.predictions.bias


def test_init_matches_hf_statistics():
    config = BertConfig(**{**TINY, "vocab_size": 2000, "hidden_size": 64})
    ours = BertForPreTraining(config)
    embeddings = ours.bert.embeddings.word_embeddings.weight
    assert torch.all(embeddings[config.pad_token_id] == 0)
    assert abs(embeddings[1:].std().item() - config.initializer_range) < 0.002
    assert torch.all(ours.bert.encoder.layer[0].output.LayerNorm.weight == 1)
    assert torch.all(ours.cls.predictions.bias == 0)


def test_logits_match_hf_with_padding():
    """HF's weights loaded into ours: dense MLM and NSP logits agree, padded rows included."""
    config = BertConfig(**TINY)
    torch.manual_seed(0)
    hf = hf_model(config).eval()
    ours = BertForPreTraining(config).eval()
    ours.load_state_dict(hf.state_dict())
    input_ids, token_type_ids, attention_mask = padded_batch(config.vocab_size)
    with torch.no_grad():
        reference = hf(input_ids=input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask)
        mlm_logits, nsp_logits = ours.full_mlm_logits(input_ids, token_type_ids, attention_mask)
    real = attention_mask.bool()
    torch.testing.assert_close(mlm_logits[real], reference.prediction_logits[real], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(nsp_logits, reference.seq_relationship_logits, atol=1e-5, rtol=1e-5)


def test_padding_does_not_change_real_positions():
    config = BertConfig(**TINY)
    model = BertModel(config).eval()
    input_ids, token_type_ids, attention_mask = padded_batch(config.vocab_size, lengths=(9, 5))
    extra = 6  # append more padding: outputs at real tokens must not move
    pad = torch.zeros(input_ids.shape[0], extra, dtype=torch.long)
    with torch.no_grad():
        short_seq, short_pooled = model(input_ids, token_type_ids, attention_mask)
        long_seq, long_pooled = model(
            torch.cat([input_ids, pad], 1), torch.cat([token_type_ids, pad], 1), torch.cat([attention_mask, pad], 1)
        )
        # Row 1 alone, unpadded, equals its padded version.
        alone_seq, _ = model(input_ids[1:, :5], token_type_ids[1:, :5], attention_mask[1:, :5])
    real = attention_mask.bool()
    torch.testing.assert_close(long_seq[:, : input_ids.shape[1]][real], short_seq[real], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(long_pooled, short_pooled, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(alone_seq[0], short_seq[1, :5], atol=1e-5, rtol=1e-5)


def test_sparse_mlm_loss_equals_dense_cross_entropy():
    config = BertConfig(**TINY)
    torch.manual_seed(0)
    model = BertForPreTraining(config).eval()
    input_ids, token_type_ids, attention_mask = padded_batch(config.vocab_size)
    mlm_labels = mlm_labels_for(input_ids, attention_mask)
    nsp_labels = torch.tensor([0, 1, 0])
    out = model(input_ids, token_type_ids, attention_mask, mlm_labels=mlm_labels, nsp_labels=nsp_labels)
    dense_logits, nsp_logits = model.full_mlm_logits(input_ids, token_type_ids, attention_mask)
    dense_loss = F.cross_entropy(dense_logits.reshape(-1, config.vocab_size), mlm_labels.reshape(-1))
    masked = mlm_labels != IGNORE_INDEX
    assert out.mlm_logits.shape == (masked.sum().item(), config.vocab_size)
    torch.testing.assert_close(out.mlm_logits, dense_logits[masked])
    torch.testing.assert_close(out.mlm_loss, dense_loss)
    torch.testing.assert_close(out.nsp_loss, F.cross_entropy(nsp_logits, nsp_labels))
    torch.testing.assert_close(out.loss, out.mlm_loss + out.nsp_loss)
    assert out.mlm_count.item() == masked.sum().item()
    hits = (dense_logits[masked].argmax(-1) == mlm_labels[masked]).sum()
    assert out.mlm_correct.item() == hits.item()


def test_softmax_cross_entropy_gradient_matches_torch():
    logits = torch.randn(7, 50, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 50, (7,))
    ours = softmax_cross_entropy(logits, labels)
    (grad_ours,) = torch.autograd.grad(ours * 3.0, logits)
    reference = F.cross_entropy(logits, labels)
    (grad_reference,) = torch.autograd.grad(reference * 3.0, logits)
    torch.testing.assert_close(ours, reference)
    torch.testing.assert_close(grad_ours, grad_reference)
    # The backward overwrites its saved buffer: a second pass must fail loudly, not return garbage.
    loss = softmax_cross_entropy(logits, labels)
    torch.autograd.grad(loss, logits, retain_graph=True)
    with pytest.raises(RuntimeError, match="only once"):
        torch.autograd.grad(loss, logits)


def test_sparse_mlm_gradients_match_dense():
    config = BertConfig(**{**TINY, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0})
    torch.manual_seed(0)
    model = BertForPreTraining(config)
    input_ids, token_type_ids, attention_mask = padded_batch(config.vocab_size)
    mlm_labels = mlm_labels_for(input_ids, attention_mask)
    model(input_ids, token_type_ids, attention_mask, mlm_labels=mlm_labels).mlm_loss.backward()
    sparse_grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    dense_logits, _ = model.full_mlm_logits(input_ids, token_type_ids, attention_mask)
    F.cross_entropy(dense_logits.reshape(-1, config.vocab_size), mlm_labels.reshape(-1)).backward()
    for name, p in model.named_parameters():
        if "pooler" in name or "seq_relationship" in name:
            assert name not in sparse_grads  # NSP path: no MLM gradient in either version
            continue
        torch.testing.assert_close(sparse_grads[name], p.grad, atol=1e-6, rtol=1e-4, msg=name)


def test_no_masked_positions_gives_zero_loss_with_graph():
    config = BertConfig(**TINY)
    model = BertForPreTraining(config)
    input_ids, token_type_ids, attention_mask = padded_batch(config.vocab_size)
    out = model(input_ids, token_type_ids, attention_mask, mlm_labels=torch.full_like(input_ids, IGNORE_INDEX))
    assert out.mlm_loss.item() == 0.0 and out.mlm_count.item() == 0 and out.mlm_logits.shape == (0, config.vocab_size)
    out.loss.backward()  # must not raise: the zero is attached to the graph
    assert model.cls.predictions.transform.dense.weight.grad is not None


def test_tiny_model_overfits_one_batch():
    """The whole pretraining path can learn: memorise the masked tokens and NSP labels of one batch."""
    config = BertConfig(
        **{**TINY, "hidden_size": 64, "num_attention_heads": 2, "intermediate_size": 128},
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    torch.manual_seed(0)
    model = BertForPreTraining(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    input_ids, token_type_ids, attention_mask = padded_batch(config.vocab_size, lengths=(32, 32, 24, 20))
    mlm_labels = mlm_labels_for(input_ids, attention_mask, rate=0.2)
    masked_inputs = torch.where(mlm_labels != IGNORE_INDEX, torch.full_like(input_ids, 3), input_ids)  # [MASK]=3
    nsp_labels = torch.tensor([0, 1, 1, 0])
    for _ in range(300):
        out = model(masked_inputs, token_type_ids, attention_mask, mlm_labels=mlm_labels, nsp_labels=nsp_labels)
        accuracy = out.mlm_correct.item() / out.mlm_count.item()
        if accuracy > 0.9 and (out.nsp_logits.argmax(-1) == nsp_labels).all():
            break  # no dropout: this forward's accuracy is the model's
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    assert out.mlm_count.item() >= 15
    assert accuracy > 0.9, f"MLM accuracy {accuracy:.2f} after 300 steps"
    assert (out.nsp_logits.argmax(-1) == nsp_labels).all()


@pytest.mark.parametrize(
    "overrides, key",
    [
        ({"hidden_size": 30}, "hidden_size"),  # 30 % 4 heads != 0
        ({"max_position_embeddings": 4097}, "max_position_embeddings"),
        ({"model_type": "xlnet"}, "model_type"),
        ({"max_position_embeddings": 0}, "max_position_embeddings"),
        ({"vocab_size": None}, "vocab_size"),
        ({"num_hidden_layers": 0}, "num_hidden_layers"),
        ({"hidden_act": "swish"}, "hidden_act"),
        ({"hidden_dropout_prob": 1.0}, "hidden_dropout_prob"),
        ({"layer_norm_eps": 0.0}, "layer_norm_eps"),
        ({"pad_token_id": 97}, "pad_token_id"),
        ({"position_init": "rotary"}, "position_init"),
    ],
)
def test_config_validation_names_the_key(overrides, key):
    with pytest.raises(ValueError, match=rf"BertConfig\.{key}="):
        BertConfig(**{**TINY, **overrides})


def test_config_hf_dict_round_trip():
    config = BertConfig(**TINY)
    hf_dict = config.to_hf_dict()
    assert hf_dict["model_type"] == "bert" and hf_dict["architectures"] == ["BertForPreTraining"]
    assert BertConfig.from_hf_dict({**hf_dict, "some_hf_only_key": 1}) == config
    hf_config = transformers.BertConfig(**hf_dict)
    for field in dataclasses.fields(BertConfig):
        if field.name not in ("embedding_size", "position_init"):  # ELECTRA only; init only, not HF's
            assert getattr(hf_config, field.name) == getattr(config, field.name), field.name
    with pytest.raises(ValueError, match="position_embedding_type"):
        BertConfig.from_hf_dict({**hf_dict, "position_embedding_type": "relative_key"})


def test_sinusoidal_position_init_shifts_by_one_rotation():
    """The point of the sinusoidal start: position p + k is the same linear map of position p for
    every p, so one query/key map can attend k tokens back anywhere. Scaled like HF's init."""
    config = BertConfig(**{**TINY, "position_init": "sinusoidal", "max_position_embeddings": 40})
    table = BertModel(config).embeddings.position_embeddings.weight.detach().double()  # (P, E)
    assert table.std().item() == pytest.approx(config.initializer_range, rel=1e-3)
    # Least-squares map from rows 0..P-4 to rows 3..P-1, then checked on every row.
    shift, *_ = torch.linalg.lstsq(table[:-3], table[3:])
    torch.testing.assert_close(table[:-3] @ shift, table[3:], atol=1e-6, rtol=0)  # fp32 table
    normal = BertModel(BertConfig(**{**TINY, "max_position_embeddings": 40})).embeddings.position_embeddings.weight
    normal = normal.detach().double()
    shift, *_ = torch.linalg.lstsq(normal[:-3], normal[3:])
    assert (normal[:-3] @ shift - normal[3:]).abs().max() > 1e-3  # random rows: no such map
    assert "position_init" not in config.to_hf_dict()  # changes nothing once trained: not HF's field


def test_sequence_longer_than_positions_is_refused():
    config = BertConfig(**{**TINY, "max_position_embeddings": 8})
    with pytest.raises(ValueError, match="max_position_embeddings=8"):
        BertModel(config)(torch.ones(1, 9, dtype=torch.long))


@pytest.mark.parametrize("mask_every", [5, 1])
def test_training_flop_estimate_matches_torch_flop_counter(mask_every):
    # The estimate feeds Lightning's ThroughputMonitor (flops/s, MFU) and the
    # throughput bench; torch counts every matmul it actually runs, backward included.
    from torch.utils.flop_counter import FlopCounterMode

    config = BertConfig(vocab_size=500, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=128, max_position_embeddings=64)
    model = BertForPreTraining(config)
    batch_size, seq_len = 4, 32
    input_ids = torch.randint(5, config.vocab_size, (batch_size, seq_len))
    mlm_labels = torch.full_like(input_ids, IGNORE_INDEX)
    mlm_labels[:, ::mask_every] = input_ids[:, ::mask_every]
    with FlopCounterMode(display=False) as counter:
        model(input_ids=input_ids, token_type_ids=torch.zeros_like(input_ids),
              attention_mask=torch.ones_like(input_ids), mlm_labels=mlm_labels,
              nsp_labels=torch.randint(0, 2, (batch_size,))).loss.backward()
    estimate = training_matmul_flops(config, batch_size, seq_len, int((mlm_labels != IGNORE_INDEX).sum()))
    assert estimate == pytest.approx(counter.get_total_flops(), rel=0.01)

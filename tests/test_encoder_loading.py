"""load_encoder on each kind of source: run directory, Lightning .ckpt, HF directory."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import save_file

from bert_lm.models.bert import BertConfig, BertForPreTraining
from bert_lm.models.hf_interop import export_hf
from bert_lm.tokenizer.loading import load_tokenizer
from bert_lm.training.encoder_loading import load_encoder, resolve_source

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory, mecab_tokenizer):
    return mecab_tokenizer.save(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="module")
def pretrained(mecab_tokenizer):
    """A tiny model with weights far from init, so a load that skips a key shows."""
    torch.manual_seed(0)
    model = BertForPreTraining(BertConfig(vocab_size=mecab_tokenizer.vocab_size, **TINY))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    return model


def save_lightning_ckpt(model: BertForPreTraining, path):
    """What run.py's checkpoints hold that load_pretraining_weights reads."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
            "hyper_parameters": {"model_config": vars(model.config).copy()},
            "global_step": 3,
        },
        path,
    )
    return path


def assert_same_encoder(encoder, model):
    expected = model.bert.state_dict()
    loaded = encoder.state_dict()
    assert loaded.keys() == expected.keys()
    for key, tensor in expected.items():
        assert torch.equal(loaded[key], tensor), key


def test_hf_directory(tmp_path, pretrained, tokenizer_dir):
    hf_dir = export_hf(pretrained, tmp_path / "hf", tokenizer_dir)
    encoder, found_tokenizer = load_encoder(hf_dir)
    assert_same_encoder(encoder, pretrained)
    assert found_tokenizer == hf_dir.resolve()


def test_run_directory_prefers_hf_export(tmp_path, pretrained, tokenizer_dir):
    run_dir = tmp_path / "run"
    export_hf(pretrained, run_dir / "hf_export", tokenizer_dir)
    other = BertForPreTraining(pretrained.config)  # a different last.ckpt: must not be read
    save_lightning_ckpt(other, run_dir / "checkpoints" / "last.ckpt")
    source = resolve_source(run_dir)
    assert source.kind == "hf" and source.weights == (run_dir / "hf_export").resolve()
    encoder, found_tokenizer = load_encoder(run_dir)
    assert_same_encoder(encoder, pretrained)
    assert found_tokenizer == (run_dir / "hf_export").resolve()


def test_run_directory_without_export_reads_last_ckpt(tmp_path, pretrained, tokenizer_dir):
    run_dir = tmp_path / "run"
    save_lightning_ckpt(pretrained, run_dir / "checkpoints" / "last.ckpt")
    with pytest.raises(FileNotFoundError, match="no tokenizer found.*tokenizer.dir"):
        load_encoder(run_dir)
    encoder, found_tokenizer = load_encoder(run_dir, tokenizer_dir=tokenizer_dir)
    assert_same_encoder(encoder, pretrained)
    assert found_tokenizer == tokenizer_dir.resolve()


def test_ckpt_file_takes_tokenizer_from_run_dir_export(tmp_path, pretrained, tokenizer_dir):
    run_dir = tmp_path / "run"
    ckpt = save_lightning_ckpt(pretrained, run_dir / "checkpoints" / "step000003.ckpt")
    tokenizer_copy = run_dir / "hf_export"
    shutil.copytree(tokenizer_dir, tokenizer_copy)  # tokenizer files only: no config.json
    encoder, found_tokenizer = load_encoder(ckpt)
    assert_same_encoder(encoder, pretrained)
    assert found_tokenizer == tokenizer_copy.resolve()
    assert resolve_source(ckpt).kind == "ckpt"


def test_ckpt_file_with_explicit_tokenizer(tmp_path, pretrained, tokenizer_dir):
    ckpt = save_lightning_ckpt(pretrained, tmp_path / "model.ckpt")
    with pytest.raises(FileNotFoundError, match="no tokenizer found"):
        load_encoder(ckpt)
    encoder, _ = load_encoder(ckpt, tokenizer_dir)
    assert_same_encoder(encoder, pretrained)


def test_vocabulary_mismatch_is_refused(tmp_path, pretrained, tokenizer_dir):
    bigger = BertForPreTraining(BertConfig(vocab_size=pretrained.config.vocab_size + 7, **TINY))
    ckpt = save_lightning_ckpt(bigger, tmp_path / "model.ckpt")
    with pytest.raises(ValueError, match="vocab_size"):
        load_encoder(ckpt, tokenizer_dir)
    hf_dir = export_hf(bigger, tmp_path / "hf", tokenizer_dir)
    with pytest.raises(ValueError, match="vocab_size"):
        load_encoder(hf_dir)


def test_errors_name_the_path_and_what_is_expected(tmp_path, tokenizer_dir):
    with pytest.raises(FileNotFoundError, match="does not exist: expected a pretraining run directory"):
        load_encoder(tmp_path / "missing")
    (tmp_path / "weights.txt").write_text("x")
    with pytest.raises(ValueError, match="not a .ckpt"):
        load_encoder(tmp_path / "weights.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty holds none of hf_export/"):
        load_encoder(tmp_path / "empty")
    (tmp_path / "config_only").mkdir()
    (tmp_path / "config_only" / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="has config.json but no model.safetensors"):
        load_encoder(tmp_path / "config_only")
    (tmp_path / "bad.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a BERT checkpoint written by run.py"):
        load_encoder(tmp_path / "bad.ckpt", tokenizer_dir)
    with pytest.raises(FileNotFoundError, match="holds no tokenizer.json or vocab.txt"):
        load_encoder(tmp_path / "bad.ckpt", tmp_path / "empty")


def test_heads_a_checkpoint_lacks_are_warned_about_only_where_they_are_read(tmp_path, tokenizer_dir, caplog):
    """A bare encoder export has no MLM/NSP heads: loading the whole model (continued pretraining reads
    them) says they start fresh; finetuning, which reads the encoder only, does not."""
    import logging

    from bert_lm.models.bert import BertModel
    from bert_lm.training.encoder_loading import load_pretrained_model

    from_pretraining = BertForPreTraining(BertConfig(vocab_size=load_tokenizer(tokenizer_dir).vocab_size, **TINY))
    hf_dir = export_hf(from_pretraining, tmp_path / "hf", tokenizer_dir)
    bare = BertModel(from_pretraining.config)
    bare.load_state_dict(from_pretraining.bert.state_dict())
    (hf_dir / "model.safetensors").unlink()
    save_file(
        {f"bert.{k}": v.contiguous() for k, v in bare.state_dict().items() if not k.startswith("pooler.")},
        hf_dir / "model.safetensors",
    )
    with caplog.at_level(logging.WARNING):
        load_pretrained_model(hf_dir)
    assert any("freshly initialised" in r.getMessage() and "cls." in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        load_encoder(hf_dir)
    assert not any("freshly initialised" in r.getMessage() for r in caplog.records)

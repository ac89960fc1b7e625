"""ELECTRA pretraining: shapes, discriminator labels, gradient flow, shared embeddings, and
exports that transformers loads with the same logits."""

from __future__ import annotations

import pytest
import torch
import transformers

from bert_lm.models.bert import IGNORE_INDEX, BertConfig
from bert_lm.models.electra import ElectraForPretraining, generator_config
from bert_lm.models.hf_interop import export_electra

TINY = BertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                  model_type="electra", embedding_size=16, max_position_embeddings=32)
SPECIAL = torch.tensor([0, 1, 2, 3, 4])  # [PAD] [UNK] [CLS] [SEP] [MASK]
MASK_ID = 4


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, 60, (3, 12), generator=g)
    input_ids[:, 0], input_ids[:, -1] = 2, 3
    attention_mask = torch.ones_like(input_ids)
    input_ids[2, 8:] = 0
    attention_mask[2, 8:] = 0
    mlm_labels = torch.full_like(input_ids, IGNORE_INDEX)
    for row, cols in ((0, [2, 5, 7]), (1, [1, 3]), (2, [4])):
        mlm_labels[row, cols] = input_ids[row, cols]
        input_ids[row, cols] = MASK_ID
    return input_ids, torch.zeros_like(input_ids), attention_mask, mlm_labels


def test_generator_is_a_fraction_of_the_discriminator_with_the_same_depth():
    gen = generator_config(TINY, 0.25)
    assert gen.hidden_size == 8 and gen.num_hidden_layers == 2 and gen.embedding_dim == 16 and gen.head_size == 8
    model = ElectraForPretraining(TINY, generator_size=0.25)
    assert model.generator.bert.embeddings_project.weight.shape == (8, 16)
    assert model.discriminator.embeddings_project.weight.shape == (32, 16)
    with pytest.raises(ValueError, match="model.generator_size"):
        generator_config(TINY, 1.5)


def test_embeddings_are_shared_storage():
    model = ElectraForPretraining(TINY)
    shared = model.discriminator.embeddings.word_embeddings.weight
    assert model.generator.bert.embeddings.word_embeddings.weight is shared
    assert model.generator.cls.predictions.decoder.weight.data_ptr() == shared.data_ptr()
    assert model.generator.bert.embeddings.position_embeddings.weight is model.discriminator.embeddings.position_embeddings.weight


def test_discriminator_labels_follow_the_samples():
    torch.manual_seed(0)
    model = ElectraForPretraining(TINY)
    input_ids, token_types, attention_mask, mlm_labels = batch()
    out = model(input_ids, token_types, attention_mask, mlm_labels, SPECIAL, generator=torch.Generator().manual_seed(1))
    is_masked = mlm_labels != IGNORE_INDEX
    originals = torch.where(is_masked, mlm_labels, input_ids)
    assert torch.equal(out.filled_ids[~is_masked], originals[~is_masked])  # only masked positions change
    assert torch.equal(out.disc_labels.bool(), out.filled_ids != originals)  # equal sample = original
    assert not torch.isin(out.filled_ids[is_masked], SPECIAL).any()  # never a special token
    assert not out.disc_mask[2, 8:].any()  # padding is not scored
    assert not out.disc_mask[:, 0].any() and not out.disc_mask[0, -1].any()  # nor [CLS] / [SEP]
    # A generator that always predicts the original (every masked token is 7 here, and the
    # generator's bias makes 7 certain): every sample equals it, nothing is "replaced".
    mlm_labels[is_masked] = 7
    with torch.no_grad():
        model.generator.cls.predictions.bias.fill_(-1e4)
        model.generator.cls.predictions.bias[7] = 1e4
    out = model(input_ids, token_types, attention_mask, mlm_labels, SPECIAL)
    assert out.disc_labels.sum() == 0


def test_no_gradient_reaches_the_generator_through_the_discriminator_loss():
    torch.manual_seed(0)
    model = ElectraForPretraining(TINY)
    out = model(*batch(), SPECIAL)
    out.disc_loss.backward()
    generator_only = [p for n, p in model.generator.named_parameters() if not n.startswith("bert.embeddings.")]
    assert all(p.grad is None or not p.grad.any() for p in generator_only)
    assert model.discriminator_predictions.dense.weight.grad.abs().sum() > 0
    assert model.discriminator.embeddings.word_embeddings.weight.grad.abs().sum() > 0  # shared: trained by both


def test_exports_load_in_transformers_with_the_same_logits(tmp_path):
    torch.manual_seed(0)
    model = ElectraForPretraining(TINY).eval()
    discriminator_dir, generator_dir = export_electra(model, tmp_path / "export")
    input_ids, token_types, attention_mask, mlm_labels = batch()
    disc, info = transformers.ElectraForPreTraining.from_pretrained(discriminator_dir, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    gen, info = transformers.ElectraForMaskedLM.from_pretrained(generator_dir, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    real = attention_mask.bool()
    with torch.no_grad():
        ours_disc = model.discriminator_predictions(model.discriminator(input_ids, token_types, attention_mask)[0])
        theirs_disc = disc.eval()(input_ids=input_ids, attention_mask=attention_mask).logits
        ours_gen = model.generator.cls.predictions(model.generator.bert(input_ids, token_types, attention_mask)[0])
        theirs_gen = gen.eval()(input_ids=input_ids, attention_mask=attention_mask).logits
    assert (ours_disc[real] - theirs_disc[real]).abs().max() <= 1e-5
    assert (ours_gen[real] - theirs_gen[real]).abs().max() <= 1e-5


@pytest.mark.slow
def test_electra_pretraining_run_exports_both_halves_and_finetunes_the_discriminator(tmp_path):
    from bert_lm.training.pretraining_run import pretrain
    from tests.test_run_pretraining import compose_config, tiny_overrides

    overrides = tiny_overrides(tmp_path, "train.objective=electra", "model.generator_size=0.5",
                               "model.embedding_size=32", "trainer.max_steps=3")
    cfg = compose_config(overrides)
    assert cfg.callbacks.model_checkpoint.monitor == "val/disc_loss"
    run_dir, hf_dir = pretrain(cfg, overrides)
    disc, info = transformers.ElectraForPreTraining.from_pretrained(hf_dir / "discriminator", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    gen, info = transformers.ElectraForMaskedLM.from_pretrained(hf_dir / "generator", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert gen.config.hidden_size == disc.config.hidden_size // 2
    # Shared embeddings: both exports hold the same table.
    assert torch.equal(gen.electra.embeddings.word_embeddings.weight, disc.electra.embeddings.word_embeddings.weight)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("bert-lm-pretraining").experiment_id])
    for metric in ("train/mlm_loss_step", "train/disc_loss_step", "val/disc_acc", "val/disc_acc_replaced",
                   "val/disc_acc_original", "val/replaced_share", "val/mlm_acc"):
        assert metric in run.data.metrics, metric
    # Finetuning takes the discriminator, fill-mask the generator.
    from bert_lm.fill_mask import fill_mask, load_for_fill_mask
    from bert_lm.training.encoder_loading import resolve_source

    assert resolve_source(run_dir).weights == hf_dir / "discriminator"
    model, tokenizer = load_for_fill_mask(run_dir)
    assert model.config.hidden_size == 32 and fill_mask(model, tokenizer, "국가의 [MASK]를", top_k=2)


@pytest.mark.slow
def test_two_process_ddp_run_on_cpu(tmp_path):
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    command = [
        sys.executable, "run.py", "model=tiny", "train.objective=electra", "model.generator_size=0.5",
        "strategy=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "data.batch_size=8", "trainer.max_steps=2",
        "trainer.val_check_interval=1.0", "trainer.limit_val_batches=1", "trainer.enable_progress_bar=false",
        "callbacks.throughput.window_size=2", f"paths.cache_dir={tmp_path / 'cache'}",
        f"hydra.run.dir={tmp_path / 'run'}", f"logger.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
        f"logger.artifact_location={tmp_path / 'art'}",
    ]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "run" / "hf_export" / "discriminator" / "model.safetensors").is_file()
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert state["global_step"] == 2


@pytest.mark.slow
def test_continued_electra_pretraining_from_a_published_pair(tmp_path, sample_lines):
    from bert_lm.training.pretraining_run import pretrain
    from tests import published_layouts
    from tests.test_run_pretraining import compose_config, tiny_overrides

    discriminator_dir, generator_dir = published_layouts.make_electra_checkpoints(tmp_path / "koelectra", sample_lines)
    # Published pairs share their embeddings: make the transformers-written pair do so too.
    disc = transformers.ElectraForPreTraining.from_pretrained(discriminator_dir)
    gen = transformers.ElectraForMaskedLM.from_pretrained(generator_dir)
    gen.electra.embeddings.load_state_dict(disc.electra.embeddings.state_dict())
    gen.save_pretrained(generator_dir)
    overrides = tiny_overrides(tmp_path, "train.objective=electra", f"init_from={tmp_path / 'koelectra'}",
                               "data.max_len=48", "trainer.max_steps=2")
    run_dir, hf_dir = pretrain(compose_config(overrides), overrides)
    after = transformers.ElectraForPreTraining.from_pretrained(hf_dir / "discriminator")
    key = "electra.encoder.layer.0.attention.self.query.weight"
    before_weights, after_weights = disc.state_dict()[key], after.state_dict()[key]
    assert not torch.equal(before_weights, after_weights) and (before_weights - after_weights).abs().max() < 0.005
    head = "discriminator_predictions.dense_prediction.weight"
    assert (disc.state_dict()[head] - after.state_dict()[head]).abs().max() < 0.005  # continued, not re-initialised
    generator_after = transformers.ElectraForMaskedLM.from_pretrained(hf_dir / "generator")
    assert generator_after.config.hidden_size == gen.config.hidden_size

"""Published encoders in, our encoders out: checkpoints written by transformers itself in the
on-disk layouts of klue/bert-base, klue/roberta, KoELECTRA (discriminator + generator) and a
SentencePiece-style tokenizer, each with its own tokenizer, go through continued pretraining
(run.py's steps) and KLUE NER finetuning (run_finetune.py's) unchanged."""

from __future__ import annotations

import json
import logging

import pytest
import torch
import transformers
from omegaconf import OmegaConf

from bert_lm.tokenizer.loading import load_tokenizer
from bert_lm.training.pretraining_run import ConfigError, build_module, pretrain, record_trained_model
from finetune.ner.export import load_ner_export
from finetune.ner.run import finetune
from tests import published_layouts
from tests.conftest import REPO_ROOT
from tests.test_finetune_e2e import compose_config as compose_finetune
from tests.test_finetune_e2e import tiny_overrides as finetune_overrides
from tests.test_run_pretraining import compose_config as compose_pretrain
from tests.test_run_pretraining import tiny_overrides as pretrain_overrides

NER_SAMPLE = REPO_ROOT / "finetune" / "sample"
HF_CLASSES = {
    "bert": transformers.BertForPreTraining,
    "roberta": transformers.RobertaForMaskedLM,
    "electra": transformers.ElectraForMaskedLM,
}


@pytest.fixture(scope="module")
def corpus_texts(sample_lines):
    """Text the test vocabularies must cover: the bundled pretraining and NER samples."""
    ner = [line.split("\t")[0] for line in (NER_SAMPLE / "klue-ner-sample-dev.tsv").read_text().splitlines()]
    ner += [line.split("\t")[0] for line in (NER_SAMPLE / "klue-ner-sample-train.tsv").read_text().splitlines()]
    return [*sample_lines, "".join(ner)]


class _Checkpoints(dict):
    """Each layout written by transformers on first use, once per module."""

    def __init__(self, root, texts):
        super().__init__()
        self.root, self.texts = root, texts

    def __missing__(self, name):
        make = {
            "bert": lambda: published_layouts.make_bert_checkpoint(self.root / "klue-bert", extra_texts=self.texts),
            "roberta": lambda: published_layouts.make_roberta_checkpoint(
                self.root / "klue-roberta", extra_texts=self.texts
            ),
            "electra-discriminator": lambda: published_layouts.make_electra_checkpoints(
                self.root / "koelectra", self.texts
            )[0],
            "electra-generator": lambda: (
                self.root / "koelectra" / "generator"
                if (self.root / "koelectra" / "generator").is_dir()
                else published_layouts.make_electra_checkpoints(self.root / "koelectra", self.texts)[1]
            ),
            "sentencepiece": lambda: published_layouts.make_sentencepiece_checkpoint(
                self.root / "sp", extra_texts=self.texts, vocab_size=2_000
            ),
        }[name]
        self[name] = make()
        return self[name]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, corpus_texts):
    return _Checkpoints(tmp_path_factory.mktemp("published"), corpus_texts)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["bert", "roberta", "electra-generator"])
def test_continued_pretraining_then_export_loads_in_transformers(tmp_path, checkpoints, name):
    source = checkpoints[name]
    overrides = pretrain_overrides(
        tmp_path, f"init_from={source}", "train.train_nsp=false", "data.max_len=48", "trainer.max_steps=3"
    )
    run_dir, hf_dir = pretrain(compose_pretrain(overrides), overrides)
    config = json.loads((hf_dir / "config.json").read_text())
    family = config["model_type"]
    # What the run records is the model that trained, not the model group's defaults.
    recorded = OmegaConf.load(run_dir / "resolved_config.yaml").model
    assert (recorded.model_type, recorded.hidden_size) == (family, config["hidden_size"])
    assert family == json.loads((source / "config.json").read_text())["model_type"]  # stays in its family
    model, info = HF_CLASSES[family].from_pretrained(hf_dir, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    # The checkpoint's own tokenizer travels with the export and gives the same ids.
    text = "국가의 미래를 위하여 이순신은 서울에서"
    assert load_tokenizer(hf_dir).encode(text).ids == load_tokenizer(source).encode(text).ids
    # Continued, not restarted: the encoder moved away from the published weights, but not far.
    before = transformers.AutoModel.from_pretrained(source).state_dict()
    after = model.base_model.state_dict()
    key = "encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(before[key], after[key])
    assert (before[key] - after[key]).abs().max() < 0.05


def test_continued_pretraining_builds_the_checkpoints_model_with_this_trainings_dropout(tmp_path, checkpoints):
    """The module is built as the checkpoint's architecture from the start: its hyper-parameters (what
    MLflow and the checkpoints record) are the model that trains, and the heads of a switched-off
    objective are frozen on it (DDP refuses parameters without gradients)."""
    source = checkpoints["roberta"]
    overrides = pretrain_overrides(
        tmp_path, f"init_from={source}", "train.train_nsp=false", "data.max_len=48", "model.hidden_dropout_prob=0.0"
    )
    cfg = compose_pretrain(overrides)
    module = build_module(cfg, load_tokenizer(source))
    published = json.loads((source / "config.json").read_text())
    assert module.hparams.model_config["model_type"] == "roberta" != cfg.model.model_type
    assert module.model.config.hidden_size == published["hidden_size"] != cfg.model.hidden_size
    assert module.model.config.hidden_dropout_prob == 0.0 != published["hidden_dropout_prob"]
    assert module.model.config.attention_probs_dropout_prob == cfg.model.attention_probs_dropout_prob
    for head in (module.model.bert.pooler, module.model.cls.seq_relationship):
        assert not any(p.requires_grad for p in head.parameters())
    reference = transformers.AutoModelForMaskedLM.from_pretrained(source)
    ours = module.model.bert.embeddings.word_embeddings.weight
    assert torch.equal(ours, reference.roberta.embeddings.word_embeddings.weight), "the checkpoint's weights"
    record_trained_model(cfg, module)
    assert (cfg.model.model_type, cfg.model.hidden_size) == ("roberta", published["hidden_size"])


def test_nsp_on_a_roberta_checkpoint_is_refused_naming_the_key(tmp_path, checkpoints):
    overrides = pretrain_overrides(tmp_path, f"init_from={checkpoints['roberta']}", "train.train_nsp=true")
    with pytest.raises(ConfigError, match="train.train_nsp"):
        pretrain(compose_pretrain(overrides), overrides)


def test_max_len_above_the_checkpoints_positions_names_both_numbers(tmp_path, checkpoints):
    overrides = pretrain_overrides(
        tmp_path, f"init_from={checkpoints['roberta']}", "train.train_nsp=false", "data.max_len=128"
    )
    with pytest.raises(ConfigError, match=r"data.max_len=128 .* 64 positions"):
        pretrain(compose_pretrain(overrides), overrides)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["bert", "roberta", "electra-discriminator", "sentencepiece"])
def test_ner_finetuning_of_a_published_encoder(tmp_path, checkpoints, name, caplog):
    overrides = finetune_overrides(
        tmp_path,
        f"pretrained={checkpoints[name]}",
        "trainer.max_epochs=1",
        "task.max_len=48",
        f"paths.output_dir={tmp_path / 'run'}",
    )
    with caplog.at_level(logging.WARNING):
        run_dir, scores = finetune(compose_finetune(overrides), overrides)
    # Finetuning reads the encoder only: heads the checkpoint lacks (pooler, NSP, a discriminator's MLM
    # head) are no news worth a warning.
    assert not [r.getMessage() for r in caplog.records if "freshly initialised" in r.getMessage()]
    assert 0.0 <= scores["entity_macro_f1"] <= 1.0
    assert (run_dir / "ner_export" / "ner_model.pt").is_file()
    predictor = load_ner_export(run_dir)
    (entities,) = predictor.entities(["이순신은 조선 중기의 무신이다."])
    assert all(0 <= e.start < e.end <= len("이순신은 조선 중기의 무신이다.") for e in entities)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["roberta", "electra-discriminator"])
def test_nli_pair_classification_of_a_published_encoder(tmp_path, checkpoints, name):
    from finetune.classification.run import finetune_classification

    overrides = finetune_overrides(
        tmp_path, "task=klue_nli", f"pretrained={checkpoints[name]}", "trainer.max_epochs=1", "task.max_len=48",
        f"paths.output_dir={tmp_path / 'run'}",
    )
    run_dir, scores = finetune_classification(compose_finetune(overrides), overrides)
    assert 0.0 <= scores["macro_f1"] <= 1.0
    export = json.loads((run_dir / "classification_report.json").read_text())
    assert export["labels"] == ["entailment", "neutral", "contradiction"]

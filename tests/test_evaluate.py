"""python -m bert_lm.evaluate: the run's own validation loss reproduced, identical masks across models,
published checkpoints with their own tokenizer, the CLI's output and MLflow run, bad input."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import pytorch_lightning as pl
from mlflow import MlflowClient

from bert_lm.corpus.prepare import VALID_FILE
from bert_lm.evaluate import EXPERIMENT_NAME, EvaluationSettings, evaluate, main
from bert_lm.models.bert import BertConfig, BertForPreTraining
from bert_lm.models.hf_interop import export_hf, read_hf_config
from bert_lm.tracking import MLFLOW_RUN_ID_FILE
from bert_lm.training.corpus_pipeline import ensure_prepared_corpus
from bert_lm.training.pretraining_module import PretrainingModule
from bert_lm.training.pretraining_run import build_datamodule
from tests import published_layouts
from tests.conftest import REPO_ROOT, SAMPLE_CORPUS
from tests.test_run_pretraining import compose_config, tiny_overrides


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A 4-step MLM-only pretraining run on the bundled sample, as tests/test_run_pretraining.py runs one."""
    from bert_lm.training.pretraining_run import pretrain

    tmp_path = tmp_path_factory.mktemp("evaluate")
    overrides = tiny_overrides(tmp_path, "train.train_nsp=false")
    cfg = compose_config(overrides)
    run_dir, hf_dir = pretrain(cfg, overrides)
    return tmp_path, cfg, run_dir, hf_dir


def own_validation(cfg, run_dir, hf_dir):
    """The run's validation metrics for its last checkpoint, by Lightning with the run's data module;
    and the run's prepared corpus directory."""
    prepared_dir = ensure_prepared_corpus(cfg.data, cfg.paths.cache_dir)  # the run's, reused
    module = PretrainingModule.load_from_checkpoint(run_dir / "checkpoints" / "last.ckpt", map_location="cpu")
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    (validated,) = trainer.validate(module, datamodule=build_datamodule(cfg, prepared_dir, hf_dir))
    return validated, prepared_dir


def test_run_valid_split_reproduces_the_models_own_validation_loss(tiny_run):
    tmp_path, cfg, run_dir, hf_dir = tiny_run
    validated, prepared_dir = own_validation(cfg, run_dir, hf_dir)
    evaluation = evaluate(
        run_dir / "checkpoints" / "last.ckpt",
        prepared_dir / VALID_FILE,
        cache_dir=tmp_path / "evaluation-cache",  # a fresh prepare step and token cache
        # The run's seed and batch size; its max_len is the default.
        settings=EvaluationSettings(seed=cfg.seed, batch_size=cfg.data.batch_size),
        device="cpu",
        show_progress=False,
    )
    assert evaluation.params["nsp"] == "False" and "nsp_acc" not in evaluation.metrics
    assert evaluation.metrics["mlm_loss"] == pytest.approx(validated["val/mlm_loss"], abs=1e-5)
    assert evaluation.metrics["mlm_acc"] == pytest.approx(validated["val/mlm_acc"], abs=1e-6)
    assert evaluation.metrics["perplexity"] == pytest.approx(validated["val/perplexity"], rel=1e-4)
    # ... and the loss the run itself logged at its final validation (last.ckpt is its final state).
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = (run_dir / MLFLOW_RUN_ID_FILE).read_text().strip()
    logged = client.get_metric_history(run_id, "val/mlm_loss")
    assert evaluation.metrics["mlm_loss"] == pytest.approx(logged[-1].value, abs=1e-5)


def test_nsp_run_is_scored_on_its_own_pairs_with_nsp_accuracy(tmp_path):
    from bert_lm.training.pretraining_run import pretrain

    overrides = tiny_overrides(tmp_path, "data.max_len=64", "seed=7")
    cfg = compose_config(overrides)
    run_dir, hf_dir = pretrain(cfg, overrides)
    validated, prepared_dir = own_validation(cfg, run_dir, hf_dir)
    evaluation = evaluate(
        run_dir / "checkpoints" / "last.ckpt",
        prepared_dir / VALID_FILE,
        cache_dir=tmp_path / "evaluation-cache",
        settings=EvaluationSettings(seed=7, batch_size=cfg.data.batch_size),
        device="cpu",
        show_progress=False,
    )
    assert evaluation.params["nsp"] == "True" and evaluation.params["max_len"] == "64"  # the run's
    for name in ("mlm_loss", "nsp_loss", "nsp_acc", "mlm_acc"):
        assert evaluation.metrics[name] == pytest.approx(validated[f"val/{name}"], abs=1e-5), name


def test_two_models_are_scored_on_identical_masks(tiny_run, tmp_path):
    _, cfg, _, hf_dir = tiny_run
    # Another architecture with the same tokenizer, written as an HF directory with no run around it.
    vocab_size = read_hf_config(hf_dir).vocab_size
    other = BertForPreTraining(
        BertConfig(
            vocab_size=vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
        )
    )
    other_dir = export_hf(other, tmp_path / "other-model", tokenizer_dir=hf_dir, objectives=["mlm"])
    common = dict(cache_dir=tmp_path / "cache", device="cpu", show_progress=False)
    settings = EvaluationSettings(max_batches=3)
    first = evaluate(hf_dir, SAMPLE_CORPUS, settings=settings, **common)
    second = evaluate(other_dir, SAMPLE_CORPUS, settings=settings, **common)
    assert first.params["max_len"] == second.params["max_len"] == "128"
    assert first.params["nsp"] == second.params["nsp"] == "False"
    assert first.mask_digest == second.mask_digest
    assert first.metrics["masked_tokens"] == second.metrics["masked_tokens"] > 0
    assert first.metrics["mlm_loss"] != pytest.approx(second.metrics["mlm_loss"])
    # The digest is of the masks, so another seed gives other masks.
    reseeded = evaluate(other_dir, SAMPLE_CORPUS, settings=EvaluationSettings(max_batches=3, seed=1), **common)
    assert reseeded.mask_digest != second.mask_digest
    # Packed spans (as a data.pack_documents=true run trained) are the same for both models too.
    packed = EvaluationSettings(max_batches=3, pack_documents=True)
    first_packed = evaluate(hf_dir, SAMPLE_CORPUS, settings=packed, **common)
    second_packed = evaluate(other_dir, SAMPLE_CORPUS, settings=packed, **common)
    assert first_packed.params["pack_documents"] == "True"
    assert first_packed.mask_digest == second_packed.mask_digest != first.mask_digest


def test_packed_spans_cannot_be_scored_as_nsp_pairs(sample_lines, tmp_path):
    checkpoint = published_layouts.make_bert_checkpoint(tmp_path / "klue-bert", extra_texts=sample_lines)
    settings = EvaluationSettings(max_batches=1, pack_documents=True)  # NSP by default: the head was trained
    with pytest.raises(ValueError, match="--pack-documents mixes documents .* add --no-nsp"):
        evaluate(checkpoint, SAMPLE_CORPUS, cache_dir=tmp_path / "cache", settings=settings, device="cpu")


def test_published_checkpoint_evaluates_with_its_own_tokenizer(sample_lines, tmp_path):
    checkpoint = published_layouts.make_bert_checkpoint(tmp_path / "klue-bert", extra_texts=sample_lines)
    evaluation = evaluate(
        checkpoint,
        SAMPLE_CORPUS,
        cache_dir=tmp_path / "cache",
        settings=EvaluationSettings(max_batches=2),
        device="cpu",
        show_progress=False,
    )
    assert evaluation.params["tokenizer"] == str(checkpoint)
    assert evaluation.params["max_len"] == str(published_layouts.MAX_TOKENS)  # its positions, below 128
    # A published BertForPreTraining carries a trained NSP head: pairs, and NSP scored.
    assert evaluation.params["nsp"] == "True" and 0.0 <= evaluation.metrics["nsp_acc"] <= 1.0
    vocab_size = len((checkpoint / "vocab.txt").read_text(encoding="utf-8").splitlines())
    # Random weights predict about uniformly: the loss is near ln(V), not the [UNK]-heavy near-zero of a misfit.
    assert abs(evaluation.metrics["mlm_loss"] - math.log(vocab_size)) < 1.0
    assert "evaluated_run_id" not in evaluation.tags


def test_record_formats_read_their_text_field(tiny_run, tmp_path):
    _, _, _, hf_dir = tiny_run
    documents = SAMPLE_CORPUS.read_text(encoding="utf-8").split("[EOD]")
    corpus = tmp_path / "corpus.jsonl"
    with corpus.open("w", encoding="utf-8") as out:
        for document in filter(str.strip, documents):
            out.write(json.dumps({"id": 1, "content": " ".join(document.split())}, ensure_ascii=False) + "\n")
    evaluation = evaluate(
        hf_dir,
        corpus,
        source="jsonl",
        split_sentences=True,
        text_field="content",
        cache_dir=tmp_path / "cache",
        settings=EvaluationSettings(max_batches=1),
        device="cpu",
        show_progress=False,
    )
    assert evaluation.params["source"] == "jsonl" and evaluation.params["text_field"] == "content"
    assert evaluation.params["split_sentences"] == "True" and evaluation.metrics["masked_tokens"] > 0


def test_cli_prints_mlm_acc_last_and_logs_an_evaluation_run(tiny_run, tmp_path, capsys):
    _, _, run_dir, _ = tiny_run
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    argv = [str(run_dir), "--data", str(SAMPLE_CORPUS), "--source", "plain", "--max-batches", "1"]
    argv += ["--cache-dir", str(tmp_path / "cache"), "--tracking-uri", tracking_uri, "--device", "cpu"]
    assert main(argv) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert [line.split(":")[0] for line in lines[-3:]] == ["mlm_loss", "perplexity", "mlm_acc"]
    (prepared,) = [line for line in lines if line.startswith("prepared: ")]
    assert "documents (one split, no valid)" in prepared, "the whole corpus is scored"
    metrics = {line.split(": ")[0]: float(line.split(": ")[1]) for line in lines[-3:]}
    assert metrics["perplexity"] == pytest.approx(math.exp(metrics["mlm_loss"]), rel=1e-5)

    client = MlflowClient(tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name(EXPERIMENT_NAME).experiment_id])
    assert run.data.tags["evaluated_run_id"] == (run_dir / MLFLOW_RUN_ID_FILE).read_text().strip()
    assert run.data.tags["evaluated_model"] == str(run_dir)
    assert run.data.params["seed"] == "0" and run.data.params["mask_ratio"] == "0.15"
    assert run.data.params["data"] == str(SAMPLE_CORPUS)
    assert run.data.metrics["mlm_acc"] == pytest.approx(metrics["mlm_acc"], abs=1e-6)
    assert run.info.status == "FINISHED"


def test_missing_model_path_is_named(tmp_path):
    missing = tmp_path / "no-such-run"
    result = subprocess.run(
        [sys.executable, "-m", "bert_lm.evaluate", str(missing), "--data", str(SAMPLE_CORPUS)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    assert str(missing) in result.stderr and "does not exist" in result.stderr
    assert "mlm_acc" not in result.stdout


def test_missing_data_path_is_named(tiny_run, tmp_path, capsys):
    _, _, _, hf_dir = tiny_run
    missing = tmp_path / "corpus.txt"
    assert main([str(hf_dir), "--data", str(missing), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"]) == 1
    assert f"--data {missing} does not exist" in capsys.readouterr().err


def test_corpus_errors_name_this_commands_flags_and_undecodable_lines_can_be_skipped(tiny_run, tmp_path, capsys):
    _, _, _, hf_dir = tiny_run
    common = ["--cache-dir", str(tmp_path / "cache"), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"]
    common += ["--device", "cpu", "--max-batches", "1"]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"content": "첫 글입니다. 둘째 문장입니다."}\n', encoding="utf-8")
    assert main([str(hf_dir), "--data", str(corpus), *common]) == 1  # read as plain text: refused by its name
    err = capsys.readouterr().err
    assert f"{corpus}: the file's name says jsonl, but --source=plain" in err and "data." not in err
    assert main([str(hf_dir), "--data", str(corpus), "--source", "jsonl", *common]) == 1
    err = capsys.readouterr().err
    assert f"{corpus}:1: no field 'text'" in err and "Set --text-field" in err and "data." not in err
    legacy = tmp_path / "legacy.txt"
    legacy.write_bytes(SAMPLE_CORPUS.read_bytes() + "깨진 줄\n".encode("cp949"))
    assert main([str(hf_dir), "--data", str(legacy), "--source", "plain", *common]) == 1
    assert "or set --on-decode-error=skip" in capsys.readouterr().err
    assert main([str(hf_dir), "--data", str(legacy), "--source", "plain", "--on-decode-error", "skip", *common]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("mlm_acc: ")


def test_electra_pair_is_scored_by_its_generator_and_a_discriminator_is_refused(sample_lines, tmp_path):
    discriminator_dir, generator_dir = published_layouts.make_electra_checkpoints(
        tmp_path / "koelectra", extra_texts=sample_lines
    )
    settings = EvaluationSettings(max_batches=1, nsp=False)
    evaluation = evaluate(
        tmp_path / "koelectra",
        SAMPLE_CORPUS,
        cache_dir=tmp_path / "cache",
        settings=settings,
        device="cpu",
        show_progress=False,
    )
    assert evaluation.params["model"] == str(generator_dir) and evaluation.metrics["masked_tokens"] > 0
    # Its discriminator alone has no MLM head: refused, pointing at the generator, before any data work.
    with pytest.raises(ValueError, match="no masked-LM head .* ELECTRA discriminator: use the generator"):
        evaluate(discriminator_dir, SAMPLE_CORPUS, cache_dir=tmp_path / "cache2", settings=settings, device="cpu")
    assert not (tmp_path / "cache2").exists()


def test_our_electra_export_and_checkpoint_point_at_the_generator(sample_lines, tmp_path):
    import dataclasses

    import torch

    from bert_lm.models.electra import ElectraForPretraining
    from bert_lm.models.hf_interop import export_electra
    from bert_lm.training.encoder_loading import EncoderSource, require_trained_mlm_head

    tokenizer_dir = published_layouts.make_bert_checkpoint(tmp_path / "tok", extra_texts=sample_lines)
    config = dataclasses.replace(read_hf_config(tokenizer_dir), model_type="electra")
    discriminator_dir, generator_dir = export_electra(
        ElectraForPretraining(config, 0.5), tmp_path / "hf_export", tokenizer_dir
    )
    settings = EvaluationSettings(max_batches=1, nsp=False)
    evaluation = evaluate(
        tmp_path / "hf_export",
        SAMPLE_CORPUS,
        cache_dir=tmp_path / "cache",
        settings=settings,
        device="cpu",
        show_progress=False,
    )
    assert evaluation.params["model"] == str(generator_dir)
    with pytest.raises(ValueError, match="ELECTRA discriminator has no MLM head: use the generator"):
        evaluate(discriminator_dir, SAMPLE_CORPUS, cache_dir=tmp_path / "cache", settings=settings, device="cpu")
    # An ELECTRA pretraining checkpoint (ElectraPretrainingModule's hparams carry disc_weight).
    checkpoint = tmp_path / "last.ckpt"
    torch.save({"hyper_parameters": {"disc_weight": 50.0}, "state_dict": {}}, checkpoint)
    with pytest.raises(
        ValueError, match=r"is an ELECTRA pretraining checkpoint .*python -m bert_lm.export.*hf_export/generator"
    ):
        require_trained_mlm_head(EncoderSource("ckpt", checkpoint, tokenizer_dir))


def test_models_without_a_trained_mlm_head_are_refused(sample_lines, tmp_path):
    import transformers

    # A bare encoder (a published BertModel): its MLM head would be random.
    checkpoint = published_layouts.make_bert_checkpoint(tmp_path / "bare", extra_texts=sample_lines)
    config = transformers.BertConfig.from_pretrained(checkpoint)
    (checkpoint / "model.safetensors").unlink()
    transformers.BertModel(config).save_pretrained(checkpoint)
    settings = EvaluationSettings(max_batches=1, nsp=False)
    with pytest.raises(ValueError, match="no masked-LM head .* bare encoder"):
        evaluate(checkpoint, SAMPLE_CORPUS, cache_dir=tmp_path / "cache", settings=settings, device="cpu")
    # Our export of an NSP-only pretraining: the head is there but never trained.
    tokenizer_dir = published_layouts.make_bert_checkpoint(tmp_path / "tok", extra_texts=sample_lines)
    model = BertForPreTraining(read_hf_config(tokenizer_dir))
    nsp_only = export_hf(model, tmp_path / "nsp-only", tokenizer_dir, objectives=["nsp"])
    with pytest.raises(ValueError, match="pretrained without MLM .train.train_mlm=false"):
        evaluate(nsp_only, SAMPLE_CORPUS, cache_dir=tmp_path / "cache", settings=settings, device="cpu")
    from bert_lm.fill_mask import load_for_fill_mask

    with pytest.raises(ValueError, match="pretrained without MLM"):  # fill-mask would print random guesses
        load_for_fill_mask(nsp_only)


def test_source_defaults_to_the_runs_format_and_differing_mask_settings_are_named(tiny_run, tmp_path, capsys):
    from omegaconf import OmegaConf

    _, _, run_dir, _ = tiny_run
    # A copy of the run that says it was pretrained on jsonl records (field "content") with 40 % masks.
    copy = tmp_path / "run"
    copy.mkdir()
    for name in ("hf_export", MLFLOW_RUN_ID_FILE):
        src = run_dir / name
        target = copy / name
        target.symlink_to(src, target_is_directory=src.is_dir())
    config = OmegaConf.load(run_dir / "resolved_config.yaml")
    config.data.source, config.data.text_field, config.data.mask_ratio = "jsonl", "content", 0.4
    OmegaConf.save(config, copy / "resolved_config.yaml")
    corpus = tmp_path / "held-out.jsonl"
    with corpus.open("w", encoding="utf-8") as out:
        for document in filter(str.strip, SAMPLE_CORPUS.read_text(encoding="utf-8").split("[EOD]")):
            out.write(json.dumps({"content": " ".join(document.split())}, ensure_ascii=False) + "\n")

    def evaluate_copy(data):
        return evaluate(
            copy,
            data,
            cache_dir=tmp_path / "cache",
            settings=EvaluationSettings(max_batches=1),
            device="cpu",
            show_progress=False,
        )

    evaluation = evaluate_copy(corpus)
    assert evaluation.params["source"] == "jsonl" and evaluation.params["text_field"] == "content"
    assert evaluation.metrics["masked_tokens"] > 0
    out = capsys.readouterr().out
    assert "note: the run trained with data.mask_ratio=0.4" in out and f"seed={config.seed}" in out
    assert evaluation.params["mask_ratio"] == "0.15"  # the flags' masks, comparable with any other model
    # A prepared split (any run's valid.txt) is plain text cut into sentences already, whatever the run read.
    evaluation = evaluate_copy(_prepared_valid(tmp_path))
    assert evaluation.params["source"] == "plain" and evaluation.params["split_sentences"] == "False"
    # Also when plain is asked for: splitting the prepared lines again would cut a few of them further.
    evaluation = evaluate(
        copy,
        _prepared_valid(tmp_path),
        source="plain",
        cache_dir=tmp_path / "cache",
        settings=EvaluationSettings(max_batches=1),
        device="cpu",
        show_progress=False,
    )
    assert evaluation.params["split_sentences"] == "False"


def _prepared_valid(tmp_path):
    from omegaconf import OmegaConf

    data = OmegaConf.merge(compose_config(tiny_overrides(tmp_path)).data, {"root": str(SAMPLE_CORPUS)})
    return ensure_prepared_corpus(data, tmp_path / "prep-cache") / VALID_FILE

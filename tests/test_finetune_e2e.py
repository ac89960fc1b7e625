"""run_finetune.py end to end on the bundled sample with a tiny encoder, then predict."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from mlflow.tracking import MlflowClient

from bert_lm import evaluate
from bert_lm.config.hydra_setup import CONFIG_DIR
from bert_lm.models.bert import BertConfig, BertForPreTraining
from bert_lm.models.hf_interop import export_hf
from bert_lm.training.encoder_loading import load_encoder
from bert_lm.training.run_support import ConfigError, user_errors_reported
from finetune import predict
from finetune.classification.download import ClassificationDownloadError
from finetune.classification.run import check_classification_config
from finetune.job_setup import build_encoder, check_finetune_overrides, setup_finetune_hydra
from finetune.ner import export as ner_export
from finetune.ner.download import KlueDownloadError
from finetune.ner.run import build_module, check_finetune_config, finetune
from finetune.scored_runs import read_scored_run
from tests.conftest import REPO_ROOT

EXPERIMENT = "bert-lm-klue-ner"


def compose_config(overrides):
    setup_finetune_hydra()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="finetune", overrides=overrides)


def tiny_overrides(tmp_path, *extra):
    return [
        "trainer.max_epochs=2",
        "trainer.log_every_n_steps=1",
        "trainer.enable_progress_bar=false",
        "task.batch_size=32",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"logger.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
        f"logger.artifact_location={tmp_path / 'artifacts'}",
        *extra,
    ]


@pytest.fixture(scope="module")
def pretrained_run(tmp_path_factory, mecab_tokenizer):
    """A pretraining run directory as run.py leaves it (hf_export/ with the tokenizer)."""
    run_dir = tmp_path_factory.mktemp("pretrain")
    tokenizer_dir = mecab_tokenizer.save(run_dir / "tokenizer")
    torch.manual_seed(0)
    model = BertForPreTraining(
        BertConfig(
            vocab_size=mecab_tokenizer.vocab_size,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
        )
    )
    export_hf(model, run_dir / "hf_export", tokenizer_dir)
    return run_dir


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory, pretrained_run):
    tmp_path = tmp_path_factory.mktemp("finetune")
    run_dir = tmp_path / "run"
    command = [
        sys.executable,
        "run_finetune.py",
        *tiny_overrides(tmp_path, f"pretrained={pretrained_run}", f"hydra.run.dir={run_dir}"),
    ]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp_path, run_dir, result.stdout


def test_cli_prints_scores_and_run_dir_last(cli_run):
    _, run_dir, stdout = cli_run
    entity_line, char_line, run_dir_line = stdout.strip().splitlines()[-3:]
    assert run_dir_line == f"run_dir: {run_dir}"
    name, value = entity_line.split(": ")
    assert name == "entity_macro_f1" and 0.0 <= float(value) <= 1.0
    name, value = char_line.split(": ")
    assert name == "char_macro_f1" and 0.0 < float(value) <= 1.0
    assert "micro avg" in stdout and "PS" in stdout, "the per-type table is printed"


def test_a_finetuning_run_given_as_an_encoder_names_the_encoder_it_came_from(cli_run, pretrained_run, capsys, tmp_path):
    """evaluate, fill-mask, finetuning and export take pretrained encoders; a finetuning run or its
    checkpoint is refused as what it is, naming its encoder and finetune.predict."""
    _, run_dir, _ = cli_run
    (checkpoint,) = (run_dir / "checkpoints").glob("*.ckpt")
    for source in (run_dir, checkpoint):
        with pytest.raises(ValueError, match=r"is a finetuning run of run_finetune.py \(task klue_ner\)") as info:
            load_encoder(source)
        assert str(pretrained_run) in str(info.value) and f"python -m finetune.predict {run_dir}" in str(info.value)
    assert evaluate.main([str(checkpoint), "--data", str(REPO_ROOT / "bert_lm/sample/korean_sample.txt")]) == 1
    assert "is a finetuning run of run_finetune.py" in capsys.readouterr().err
    # With callbacks.model_checkpoint.save_last=true it has checkpoints/last.ckpt, as a stopped pretraining run has.
    with_last = tmp_path / "with_last"
    shutil.copytree(run_dir, with_last)
    shutil.copy(checkpoint, with_last / "checkpoints" / "last.ckpt")
    with pytest.raises(ValueError, match=r"is a finetuning run of run_finetune.py"):
        load_encoder(with_last)


def test_cli_reports_bad_input_in_one_line(tmp_path):
    """Bad input ends the job with the message alone, as run.py does, not a Hydra traceback."""
    command = [sys.executable, "run_finetune.py", *tiny_overrides(tmp_path, f"task.data_dir={tmp_path / 'nowhere'}")]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert f"error: task.data_dir={tmp_path / 'nowhere'} holds none of the KLUE NER file pairs" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("error", [KlueDownloadError, ClassificationDownloadError])
def test_a_failed_download_is_reported_in_one_line(error, capsys):
    with pytest.raises(SystemExit) as exit_info, user_errors_reported():
        raise error("could not fetch x.tsv: no network; put the files in task.data_dir")
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.startswith("error: could not fetch x.tsv: no network")


def test_run_dir_holds_report_confusion_predictions_and_export(cli_run):
    _, run_dir, stdout = cli_run
    report = json.loads((run_dir / "ner_report.json").read_text())
    assert report["sentences"] == 40 and report["skipped"] == 0
    assert {"DT", "LC", "OG", "PS", "QT", "TI", "macro avg"} <= set(report["per_type"])
    assert f"char_macro_f1: {report['char_macro_f1']:.4f}" in stdout
    assert (run_dir / "entity_confusion.png").read_bytes()[:4] == b"\x89PNG"
    assert (run_dir / "eval_predictions.tsv").read_text().count("\n## klue-ner-sample_dev_") == 40
    export = torch.load(run_dir / "ner_export" / "ner_model.pt", map_location="cpu", weights_only=True)
    assert export["head"] == "crf" and export["labels"][-1] == "O"
    assert not (run_dir / "ner_export" / "model.safetensors").exists(), "only tokenizer files are copied"
    # The report names the scored file, so finetune.compare reads the run back to the same figure.
    assert report["eval_file"] == str(REPO_ROOT / "finetune" / "sample" / "klue-ner-sample-dev.tsv")
    run = read_scored_run(run_dir)
    assert run.macro_f1() == pytest.approx(report["entity_macro_f1"], abs=1e-9)
    # Gold spans are read from the named file whatever the tiny model predicts: seqeval's support.
    assert run.gold_counts.sum() == report["per_type"]["micro avg"]["support"] > 0


def test_mlflow_has_the_run_with_metrics_and_artifacts(cli_run, pretrained_run):
    tmp_path, run_dir, _ = cli_run
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(EXPERIMENT)
    (run,) = client.search_runs([experiment.experiment_id])
    for metric in (
        "val/entity_macro_f1",
        "val/char_macro_f1",
        "val/entity_micro_f1",
        "val/loss",
        "train/loss_step",
        "lr-AdamW/encoder",
        "lr-AdamW/head",
    ):
        assert metric in run.data.metrics, metric
    assert run.data.params["finetune/head"] == "crf"
    assert run.data.params["finetune/init"] == "pretrained"
    assert run.data.params["pretrained"] == str(pretrained_run)
    # The model/* params describe the encoder that was finetuned (hidden 32), not the unused model group's.
    assert run.data.params["model/hidden_size"] == "32" and run.data.params["model/num_hidden_layers"] == "1"
    assert "pretrained weights" in run.data.tags["encoder"]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {
        "ner_report.json",
        "ner_report.txt",
        "entity_confusion.png",
        "eval_predictions.tsv",
        "resolved_config.yaml",
        "ner_export",
    } <= artifacts


def test_predict_prints_entities_with_spans(cli_run, tmp_path, capsys):
    _, run_dir, _ = cli_run
    sentences = tmp_path / "sentences.txt"
    sentences.write_text(
        "서울시교육청은 다음 달 1일부터 돌봄교실을 운영한다.\n\n김민준 씨는 부산에 산다.\n", encoding="utf-8"
    )
    assert predict.main([str(run_dir), "이순신은 조선 중기의 무신이다.", "--file", str(sentences)]) == 0
    lines = capsys.readouterr().out.splitlines()
    headers = [line for line in lines if line.startswith("## ")]
    assert len(headers) == 3
    for line in lines:
        if not line.startswith("## "):
            surface, entity_type, start, end = line.split("\t")
            assert entity_type in {"DT", "LC", "OG", "PS", "QT", "TI"} and int(start) < int(end)

    # Entities come back as spans of the input, and a sentence longer than the model
    # length is read in windows: every character gets a tag.
    predictor = ner_export.load_ner_export(run_dir)
    text = " ".join(["서울시교육청은 다음 달 1일부터 돌봄교실을 운영한다."] * 20)
    (tags,) = predictor.char_tags([text])
    assert len(tags) == len(text)
    for entity in predictor.entities([text])[0]:
        assert text[entity.start : entity.end] == entity.text


def test_predict_reports_a_wrong_directory(pretrained_run, capsys):
    """A pretraining run (or any directory without an export) is named as not a finetuning run."""
    assert predict.main([str(pretrained_run), "문장"]) == 1
    err = capsys.readouterr().err
    assert "holds neither ner_export/ nor classification_export/" in err and "bert_lm.fill_mask" in err


def test_predict_reports_a_damaged_export(cli_run, tmp_path, capsys):
    import shutil

    import torch

    run_dir = cli_run[1]
    export_dir = tmp_path / "ner_export"
    shutil.copytree(run_dir / "ner_export", export_dir)
    model_file = export_dir / ner_export.MODEL_FILE
    model_file.write_bytes(b"not a checkpoint")
    assert predict.main([str(export_dir), "문장"]) == 1
    assert f"{model_file}: not a readable NER export" in capsys.readouterr().err
    export = torch.load(run_dir / "ner_export" / ner_export.MODEL_FILE, weights_only=True)
    del export["labels"]
    torch.save(export, model_file)
    assert predict.main([str(export_dir), "문장"]) == 1
    assert f"{model_file}: lacks labels" in capsys.readouterr().err


def test_an_export_written_before_the_crf_frame_constraint_still_loads(cli_run, tmp_path):
    """Version 1 exports stored the CRF's end scores under their plain name."""
    run_dir = cli_run[1]
    export_dir = tmp_path / "ner_export"
    shutil.copytree(run_dir / "ner_export", export_dir)
    model_file = export_dir / ner_export.MODEL_FILE
    export = torch.load(model_file, weights_only=True)
    assert export["format_version"] == 2
    state = export["state_dict"]
    state["crf.crf.end_transitions"] = state.pop("crf.crf.parametrizations.end_transitions.original")
    torch.save({**export, "format_version": 1}, model_file)
    text = "김철수는 서울에 산다."
    assert ner_export.load_ner_export(export_dir).char_tags([text]) == ner_export.load_ner_export(run_dir).char_tags([text])


def test_default_without_pretrained_is_a_random_encoder_with_a_task_tokenizer(tmp_path):
    """What `python run_finetune.py` does on a fresh clone, shrunk: softmax head for coverage."""
    overrides = tiny_overrides(
        tmp_path, "model=tiny", "finetune.head=softmax", "trainer.max_epochs=1", f"paths.output_dir={tmp_path / 'run'}"
    )
    run_dir, scores = finetune(compose_config(overrides), overrides)
    assert set(scores) == {"entity_macro_f1", "entity_micro_f1", "char_macro_f1"}
    assert list((tmp_path / "cache" / "tokenizers").iterdir()), "tokenizer trained on the task's train text"
    predictor = ner_export.load_ner_export(run_dir)
    assert predictor.tagger.head == "softmax" and predictor.tagger.config.hidden_size == 64
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id])
    assert run.data.params["finetune/init"] == "random"
    assert "no-pretraining baseline" in run.data.tags["encoder"]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["finetune.init=pretrained"], "finetune.init=pretrained needs pretrained="),
        (["finetune.head=lstm"], "finetune.head='lstm'"),
        (["task.max_len=256"], "task.max_len=256 is above model.max_position_embeddings=128"),
        (["task.stride=200"], "task.stride=200"),
        (["pretrained=/nonexistent/run"], "pretrained: /nonexistent/run does not exist: expected a pretraining run"),
        (["trainer.devices=2"], "finetuning evaluates in one process"),
    ],
)
def test_bad_settings_fail_before_any_work(overrides, message):
    cfg = compose_config([*overrides, "paths.output_dir=/tmp/unused"])
    with pytest.raises(ConfigError, match=message):
        check_finetune_config(cfg)


def test_encoder_dropout_replaces_the_checkpoint_dropout_only_when_set(pretrained_run):
    """The recipe exports dropout 0; finetune.encoder_dropout turns it back on for finetuning."""
    torch.manual_seed(0)
    ids = torch.randint(5, 100, (2, 12))
    mask = torch.ones_like(ids)

    def job_encoder(dropout):
        cfg = compose_config(
            [f"pretrained={pretrained_run}", f"finetune.encoder_dropout={dropout}", "paths.output_dir=/tmp/unused"]
        )
        check_finetune_config(cfg)
        encoder = build_encoder(cfg, "pretrained", REPO_ROOT / "finetune" / "sample" / "klue-ner-sample-train.tsv")
        tagger = build_module(cfg, encoder).tagger.train()
        return encoder, tagger

    own, _ = job_encoder("null")
    assert own.config["hidden_dropout_prob"] == own.config["attention_probs_dropout_prob"] == 0.1  # the export's
    off, tagger_off = job_encoder(0.0)
    assert off.config["hidden_dropout_prob"] == off.config["attention_probs_dropout_prob"] == 0.0
    assert {k: v for k, v in off.config.items() if "dropout" not in k} == {
        k: v for k, v in own.config.items() if "dropout" not in k
    }
    assert torch.equal(tagger_off(ids, mask), tagger_off(ids, mask))  # training mode, nothing dropped
    on, tagger_on = job_encoder(0.3)
    assert on.config["attention_probs_dropout_prob"] == 0.3
    # The same pretrained weights are loaded; only the dropout differs.
    assert torch.equal(
        tagger_on.encoder.embeddings.word_embeddings.weight, tagger_off.encoder.embeddings.word_embeddings.weight
    )
    assert not torch.allclose(tagger_on(ids, mask), tagger_on(ids, mask))
    # In eval mode the two encoders agree (the heads are drawn at random, each its own).
    tagger_on.eval(), tagger_off.eval()
    assert torch.allclose(tagger_on.encoder(ids, None, mask)[0], tagger_off.encoder(ids, None, mask)[0], atol=1e-5)
    for bad in ("1.0", "-0.1"):
        with pytest.raises(ConfigError, match=f"finetune.encoder_dropout={bad}: use a probability"):
            check_finetune_config(compose_config([f"finetune.encoder_dropout={bad}", "paths.output_dir=/tmp/unused"]))
        with pytest.raises(ConfigError, match=f"finetune.encoder_dropout={bad}: use a probability"):
            check_classification_config(
                compose_config(["task=hate_speech", f"finetune.encoder_dropout={bad}", "paths.output_dir=/tmp/unused"])
            )


def test_unknown_key_names_valid_keys(capsys):
    with pytest.raises(SystemExit) as exit_info:
        check_finetune_overrides(["finetune.lr=1e-3"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "unknown config key 'finetune.lr'" in err and "encoder_lr" in err and "head_lr" in err
    with pytest.raises(SystemExit):
        check_finetune_overrides(["task.maxlen=64"])
    assert "Did you mean 'max_len'?" in capsys.readouterr().err
    # A top-level typo: Hydra alone advises +pretrianed=, which would finetune a random encoder.
    with pytest.raises(SystemExit):
        check_finetune_overrides(["pretrianed=/some/run"])
    err = capsys.readouterr().err
    assert "unknown config key 'pretrianed'. Did you mean 'pretrained'?" in err and "+pretrianed" not in err


@pytest.mark.slow
def test_ner_test_file_is_scored_once_with_the_exported_model(tmp_path, pretrained_run):
    sample_dev = REPO_ROOT / "finetune" / "sample" / "klue-ner-sample-dev.tsv"
    overrides = tiny_overrides(
        tmp_path,
        f"pretrained={pretrained_run}",
        "trainer.max_epochs=1",
        f"task.test_file={sample_dev}",
        f"paths.output_dir={tmp_path / 'run'}",
    )
    run_dir, scores = finetune(compose_config(overrides), overrides)
    report = json.loads((run_dir / "test_report.json").read_text())
    assert report["test_entity_macro_f1"] == pytest.approx(scores["test_entity_macro_f1"])
    # Here the test file is the evaluation file, so the one test scoring equals the final validation.
    assert scores["test_entity_macro_f1"] == pytest.approx(scores["entity_macro_f1"])
    assert (run_dir / "test_predictions.tsv").is_file()
    test_run = read_scored_run(run_dir, split="test")
    assert test_run.source == str(sample_dev) and test_run.units == read_scored_run(run_dir).units
    assert test_run.macro_f1() == pytest.approx(report["test_entity_macro_f1"], abs=1e-9)

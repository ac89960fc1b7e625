"""python -m bert_lm.export: a run stopped before its export gets exactly the export run.py would
have written (BERT and ELECTRA), from the checkpoint run.py would have chosen, with the tokenizer the
run kept; nothing already written is overwritten, a failed export leaves nothing behind."""

from __future__ import annotations

import shutil

import pytest
import torch
from mlflow import MlflowClient

from bert_lm import export
from bert_lm.tracking import MLFLOW_RUN_ID_FILE
from bert_lm.training import checkpoint_export
from bert_lm.training.checkpoint_export import best_checkpoint
from bert_lm.training.encoder_loading import load_encoder
from bert_lm.training.pretraining_run import pretrain
from tests.test_run_pretraining import compose_config, tiny_overrides

ELECTRA = ("train.objective=electra", "model.generator_size=0.5")


def _stopped_run(tmp_path, *extra):
    """A tiny run whose export is moved aside, as if it had been killed after its last checkpoint:
    returns (run dir, the export run.py wrote, tracking URI)."""
    overrides = tiny_overrides(tmp_path, "train.train_nsp=false", *extra)
    run_dir, _ = pretrain(compose_config(overrides), overrides)
    written = tmp_path / "run_py_export"
    shutil.move(run_dir / "hf_export", written)
    return run_dir, written, f"sqlite:///{tmp_path / 'mlflow.db'}"


def _files(directory):
    return {p.relative_to(directory): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("objective", ["mlm", "electra"])
def test_export_of_a_stopped_run_is_the_export_run_py_writes(tmp_path, capsys, objective):
    run_dir, written, tracking_uri = _stopped_run(tmp_path, *(ELECTRA if objective == "electra" else ()))
    assert (run_dir / "tokenizer" / "tokenizer.json").is_file(), "run.py keeps its tokenizer before training"

    assert export.main([str(run_dir), "--tracking-uri", tracking_uri]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    finetuning_dir = run_dir / "hf_export" / ("discriminator" if objective == "electra" else "")
    assert lines[-1] == f"hf_export: {finetuning_dir.resolve()}"
    # Byte for byte what run.py exported (weights, config, tokenizer and its remote code), from the
    # same (best) checkpoint.
    assert _files(run_dir / "hf_export") == _files(written)
    run_id = (run_dir / MLFLOW_RUN_ID_FILE).read_text().strip()
    client = MlflowClient(tracking_uri)
    logged = {a.path for a in client.list_artifacts(run_id, "hf_export")}
    expected = (
        {"hf_export/discriminator", "hf_export/generator"}
        if objective == "electra"
        else {"hf_export/config.json", "hf_export/model.safetensors"}
    )
    assert expected <= logged
    assert client.get_run(run_id).data.tags["exported_from"] == best_checkpoint(run_dir).name


def test_a_stopped_run_finetunes_with_its_kept_tokenizer_and_an_electra_one_asks_for_the_export(tmp_path):
    run_dir, written, _ = _stopped_run(tmp_path / "mlm")
    encoder, tokenizer_dir = load_encoder(run_dir)  # no hf_export: last.ckpt with <run>/tokenizer
    assert tokenizer_dir == run_dir / "tokenizer"
    assert encoder.embeddings.word_embeddings.weight.shape[0] == len(
        (written / "vocab.txt").read_text(encoding="utf-8").splitlines()
    )
    electra_dir, _, _ = _stopped_run(tmp_path / "electra", *ELECTRA)
    with pytest.raises(ValueError, match=r"ELECTRA pretraining checkpoint .*python -m bert_lm.export"):
        load_encoder(electra_dir)


def test_an_existing_export_is_never_overwritten(tmp_path, capsys):
    run_dir, _, tracking_uri = _stopped_run(tmp_path)
    assert export.main([str(run_dir), "--tracking-uri", tracking_uri]) == 0
    before = _files(run_dir / "hf_export")
    assert export.main([str(run_dir), "--tracking-uri", tracking_uri]) == 1
    assert "already holds files" in capsys.readouterr().err
    assert _files(run_dir / "hf_export") == before
    # Another checkpoint of the same run into a directory of its own: the run's tokenizer is found.
    other = tmp_path / "last_export"
    assert (
        export.main([str(run_dir / "checkpoints" / "last.ckpt"), "--out", str(other), "--tracking-uri", tracking_uri])
        == 0
    )
    assert (other / "config.json").is_file() and (other / "tokenizer.json").is_file()


def test_a_failed_export_leaves_nothing_behind(tmp_path, monkeypatch):
    run_dir, _, _ = _stopped_run(tmp_path)
    real_export_hf = checkpoint_export.export_hf

    def crash_after_writing(*args, **kwargs):
        real_export_hf(*args, **kwargs)
        raise OSError("simulated: disk full")

    monkeypatch.setattr(checkpoint_export, "export_hf", crash_after_writing)
    before = sorted(p.name for p in run_dir.iterdir())
    with pytest.raises(OSError, match="simulated"):
        checkpoint_export.export_checkpoint(best_checkpoint(run_dir), run_dir / "hf_export", run_dir / "tokenizer")
    assert "hf_export" not in before
    assert sorted(p.name for p in run_dir.iterdir()) == before, "no export and no temporary directory left"


def test_bad_sources_are_named_with_what_to_pass(tmp_path, capsys):
    run_dir, written, tracking_uri = _stopped_run(tmp_path)
    shutil.rmtree(run_dir / "tokenizer")  # a run from before runs kept their tokenizer
    assert export.main([str(run_dir), "--tracking-uri", tracking_uri]) == 1
    assert "pass --tokenizer" in capsys.readouterr().err
    assert export.main([str(run_dir), "--tokenizer", str(written), "--tracking-uri", tracking_uri]) == 0
    capsys.readouterr()

    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"lr": 1e-3}}, foreign)
    assert export.main([str(foreign), "--tokenizer", str(written), "--out", str(tmp_path / "x")]) == 1
    assert "was not written by run.py" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()

    assert export.main([str(tmp_path / "nowhere")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert export.main([str(tmp_path)]) == 1  # a directory without checkpoints/last.ckpt
    assert "no checkpoints/last.ckpt" in capsys.readouterr().err


def test_best_checkpoint_is_the_one_model_checkpoint_recorded_found_by_name(tmp_path):
    checkpoints = tmp_path / "run" / "checkpoints"
    checkpoints.mkdir(parents=True)
    callback_state = {"monitor": "val/mlm_loss", "best_model_path": "/elsewhere/run/checkpoints/step000040.ckpt"}
    torch.save({"callbacks": {"ModelCheckpoint{'monitor': 'val/mlm_loss'}": callback_state}}, checkpoints / "last.ckpt")
    # Recorded under the run's old place (the run was moved): not there yet, so last.ckpt.
    assert best_checkpoint(tmp_path / "run") == checkpoints / "last.ckpt"
    (checkpoints / "step000040.ckpt").write_bytes(b"")
    assert best_checkpoint(tmp_path / "run") == checkpoints / "step000040.ckpt"

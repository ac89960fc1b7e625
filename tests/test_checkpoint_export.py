"""python -m bert_lm.export: a run stopped before its export gets exactly the export run.py would
have written (BERT and ELECTRA), from the checkpoint run.py would have chosen, with the tokenizer the
run kept; nothing already written is overwritten, a failed export leaves nothing behind."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from bert_lm import export
from bert_lm.fill_mask import fill_mask, load_for_fill_mask
from bert_lm.tracking import MLFLOW_RUN_ID_FILE
from bert_lm.training import checkpoint_export
from bert_lm.training.encoder_loading import load_encoder, resolve_source
from bert_lm.training.pretraining_run import pretrain
from bert_lm.training.run_support import ConfigError, best_checkpoint, keep_run_tokenizer
from finetune import augment
from tests.test_run_pretraining import compose_config, tiny_overrides

ELECTRA = ("train.objective=electra", "model.generator_size=0.5")


def _stopped_run(tmp_path, *extra):
    """A tiny run whose export is taken away, on disk and in MLflow, as if it had been killed after
    its last checkpoint: returns (run dir, the export run.py wrote, tracking URI). The checkpoint
    callback ranks by step, lowest first, so that the best checkpoint (step 2) is never the last (4)."""
    overrides = tiny_overrides(
        tmp_path,
        "train.train_nsp=false",
        "callbacks.model_checkpoint.monitor=step",
        "callbacks.model_checkpoint.mode=min",
        *extra,
    )
    run_dir, _ = pretrain(compose_config(overrides), overrides)
    written = tmp_path / "run_py_export"
    shutil.move(run_dir / "hf_export", written)
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri)
    run = client.get_run((run_dir / MLFLOW_RUN_ID_FILE).read_text().strip())
    shutil.rmtree(Path(run.info.artifact_uri.removeprefix("file://")) / "hf_export")
    return run_dir, written, tracking_uri


def _files(directory):
    return {p.relative_to(directory): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("objective", ["mlm", "electra"])
def test_export_of_a_stopped_run_is_the_export_run_py_writes(tmp_path, capsys, objective):
    run_dir, written, tracking_uri = _stopped_run(tmp_path, *(ELECTRA if objective == "electra" else ()))
    assert (run_dir / "tokenizer" / "tokenizer.json").is_file(), "run.py keeps its tokenizer before training"
    run_id = (run_dir / MLFLOW_RUN_ID_FILE).read_text().strip()
    client = MlflowClient(tracking_uri)
    best, _ = best_checkpoint(run_dir)
    # The checkpoint run.py chose (and logged) is the recorded best, not last.ckpt's final state.
    assert [a.path for a in client.list_artifacts(run_id, "checkpoints")] == [f"checkpoints/{best.name}"]
    last_weights = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    best_weights = torch.load(best, weights_only=True)["state_dict"]
    assert any(not torch.equal(last_weights[k], best_weights[k]) for k in best_weights)

    capsys.readouterr()  # the run's own output
    assert export.main([str(run_dir), "--tracking-uri", tracking_uri]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert best.name == "step000002.ckpt"
    assert lines[0] == f"checkpoint: {best.resolve()} (the best by step)"
    assert lines[-1] == f"hf_export: {(run_dir / 'hf_export').resolve()}"
    # Byte for byte what run.py exported (weights, config, tokenizer and its remote code).
    assert _files(run_dir / "hf_export") == _files(written)
    logged = {a.path for a in client.list_artifacts(run_id, "hf_export")}
    expected = (
        {"hf_export/discriminator", "hf_export/generator"}
        if objective == "electra"
        else {"hf_export/config.json", "hf_export/model.safetensors"}
    )
    assert expected <= logged
    assert client.get_run(run_id).data.tags["exported_from"] == best.name


def test_a_stopped_run_finetunes_from_its_best_checkpoint_and_an_electra_one_asks_for_the_export(tmp_path):
    run_dir, written, _ = _stopped_run(tmp_path / "mlm")
    best, _ = best_checkpoint(run_dir)
    assert resolve_source(run_dir).weights == best, "the checkpoint its export would hold"
    encoder, tokenizer_dir = load_encoder(run_dir)  # no hf_export: with <run>/tokenizer
    assert tokenizer_dir == run_dir / "tokenizer"
    best_weights = torch.load(best, weights_only=True)["state_dict"]
    for key, tensor in encoder.state_dict().items():
        assert torch.equal(tensor, best_weights[f"model.bert.{key}"]), key
    # fill-mask too: the stopped run's candidates are those of the export run.py wrote.
    text = "국민 청원 [MASK] 답변"
    assert fill_mask(*load_for_fill_mask(run_dir), text, top_k=5) == fill_mask(*load_for_fill_mask(written), text, 5)
    # and fill-mask augmentation, which loads its masked LM the same way.
    source = tmp_path / "train.tsv"
    source.write_text("text\tlabel\n국민 청원 답변을 기다립니다\t0\n청원 게시판에 글을 올립니다\t1\n", encoding="utf-8")
    outputs = {}
    for name, model in (("stopped", run_dir), ("exported", written)):
        outputs[name] = tmp_path / f"aug_{name}.tsv"
        argv = [str(model), "--input", str(source), "--output", str(outputs[name]), "--text-column", "text"]
        assert augment.main([*argv, "--n", "2", "--no-progress"]) == 0
    assert outputs["stopped"].read_bytes() == outputs["exported"].read_bytes()
    assert len(outputs["stopped"].read_text(encoding="utf-8").splitlines()) > 1, "variants were written"
    electra_dir, _, _ = _stopped_run(tmp_path / "electra", *ELECTRA)
    with pytest.raises(ValueError, match=r"ELECTRA pretraining checkpoint .*python -m bert_lm.export"):
        load_encoder(electra_dir)


def test_an_existing_export_is_never_overwritten_on_disk_or_in_mlflow(tmp_path, capsys):
    run_dir, _, tracking_uri = _stopped_run(tmp_path)
    assert export.main([str(run_dir), "--tracking-uri", tracking_uri]) == 0
    before = _files(run_dir / "hf_export")
    client = MlflowClient(tracking_uri)
    run_id = (run_dir / MLFLOW_RUN_ID_FILE).read_text().strip()
    artifact_dir = Path(client.get_run(run_id).info.artifact_uri.removeprefix("file://")) / "hf_export"
    logged = _files(artifact_dir)
    assert export.main([str(run_dir), "--tracking-uri", tracking_uri]) == 1
    assert "already holds files" in capsys.readouterr().err
    assert _files(run_dir / "hf_export") == before
    # Another checkpoint of the same run into a directory of its own: the run's tokenizer is found,
    # and the run's MLflow export stays the one of its best checkpoint.
    other = tmp_path / "last_export"
    last = run_dir / "checkpoints" / "last.ckpt"
    assert export.main([str(last), "--out", str(other), "--tracking-uri", tracking_uri]) == 0
    assert "not logged to MLflow: only the run's own hf_export/" in capsys.readouterr().out
    assert (other / "config.json").is_file() and (other / "tokenizer.json").is_file()
    assert _files(other) != before  # last.ckpt's weights, not the best's
    assert _files(artifact_dir) == logged
    assert client.get_run(run_id).data.tags["exported_from"] == best_checkpoint(run_dir)[0].name
    # Into the run's own hf_export/: last.ckpt is not what run.py exports, so not logged; nor is an
    # export the MLflow run holds already.
    shutil.rmtree(run_dir / "hf_export")
    assert export.main([str(last), "--tracking-uri", tracking_uri]) == 0
    assert "last.ckpt is not the checkpoint run.py exports (step000002.ckpt)" in capsys.readouterr().out
    shutil.rmtree(run_dir / "hf_export")
    assert export.main([str(run_dir), "--tracking-uri", tracking_uri]) == 0
    assert "already holds hf_export/ artifacts" in capsys.readouterr().out
    assert _files(artifact_dir) == logged


def test_a_failed_export_leaves_nothing_behind(tmp_path, monkeypatch):
    run_dir, _, _ = _stopped_run(tmp_path)
    real_export_hf = checkpoint_export.export_hf

    def crash_after_writing(*args, **kwargs):
        real_export_hf(*args, **kwargs)
        raise OSError("simulated: disk full")

    monkeypatch.setattr(checkpoint_export, "export_hf", crash_after_writing)
    before = sorted(p.name for p in run_dir.iterdir())
    with pytest.raises(OSError, match="simulated"):
        checkpoint_export.export_checkpoint(best_checkpoint(run_dir)[0], run_dir / "hf_export", run_dir / "tokenizer")
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
    # Recorded under the run's old place (the run was moved) and not copied along: last.ckpt, saying why.
    assert best_checkpoint(tmp_path / "run") == (
        checkpoints / "last.ckpt",
        "the recorded best, step000040.ckpt, is gone",
    )
    (checkpoints / "step000040.ckpt").write_bytes(b"")
    assert best_checkpoint(tmp_path / "run") == (checkpoints / "step000040.ckpt", "the best by val/mlm_loss")
    # torch's legacy (non-zip) format cannot be memory-mapped: read whole, the same answer.
    torch.save(
        {"callbacks": {"ModelCheckpoint{'monitor': 'val/mlm_loss'}": callback_state}},
        checkpoints / "last.ckpt",
        _use_new_zipfile_serialization=False,
    )
    assert best_checkpoint(tmp_path / "run") == (checkpoints / "step000040.ckpt", "the best by val/mlm_loss")


def test_the_kept_tokenizer_is_written_once_whole_and_a_different_one_is_refused(tmp_path, monkeypatch):
    from tests import published_layouts

    first = published_layouts.make_bert_checkpoint(tmp_path / "first", extra_texts=["가나다 라마"])
    second = published_layouts.make_bert_checkpoint(tmp_path / "second", extra_texts=["바사아 자차카"])
    run_dir = tmp_path / "run"
    kept = keep_run_tokenizer(first, run_dir)
    assert (kept / "vocab.txt").read_bytes() == (first / "vocab.txt").read_bytes()
    assert keep_run_tokenizer(first, run_dir) == kept  # a resume, or another DDP process
    # A resume with another tokenizer: checkpoints of two tokenizers would export with the wrong one.
    with pytest.raises(ConfigError, match=r"differs from .*second in vocab.txt: resume with tokenizer.dir="):
        keep_run_tokenizer(second, run_dir)
    assert (kept / "vocab.txt").read_bytes() == (first / "vocab.txt").read_bytes()

    def copy_fails(source, destination):
        (Path(destination) / "vocab.txt").write_text("half")
        raise OSError("simulated: disk full")

    monkeypatch.setattr("bert_lm.training.run_support.copy_tokenizer_files", copy_fails)
    other_run = tmp_path / "other_run"
    other_run.mkdir()
    with pytest.raises(OSError, match="simulated"):
        keep_run_tokenizer(first, other_run)
    assert list(other_run.iterdir()) == [], "no tokenizer and no temporary directory left"


def test_a_deepspeed_checkpoint_is_converted_again_when_its_shards_change(tmp_path, monkeypatch):
    import os

    import pytorch_lightning.utilities.deepspeed as lightning_deepspeed

    from bert_lm.training.strategies import consolidated_checkpoint

    conversions = []

    def convert(checkpoint_dir, output_file):
        conversions.append(checkpoint_dir)
        torch.save({"version": len(conversions)}, output_file)

    monkeypatch.setattr(lightning_deepspeed, "convert_zero_checkpoint_to_fp32_state_dict", convert)
    shards = tmp_path / "last.ckpt" / "checkpoint"
    shards.mkdir(parents=True)
    (shards / "mp_rank_00_model_states.pt").write_bytes(b"step 3")
    converted = consolidated_checkpoint(tmp_path / "last.ckpt")
    assert consolidated_checkpoint(tmp_path / "last.ckpt") == converted and len(conversions) == 1
    # Lightning rewrites last.ckpt in place at the next save (or a resumed run's).
    (shards / "mp_rank_00_model_states.pt").write_bytes(b"step 6")
    later = converted.stat().st_mtime + 10
    os.utime(shards / "mp_rank_00_model_states.pt", (later, later))
    consolidated_checkpoint(tmp_path / "last.ckpt")
    assert len(conversions) == 2 and torch.load(converted, weights_only=True)["version"] == 2

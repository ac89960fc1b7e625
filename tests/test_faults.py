"""Faults a long pretraining run meets: kill -9, a crash mid-checkpoint, a NaN
loss, an unwritable output directory."""

import os
import signal
import subprocess
import sys
import time

import pytest
import pytorch_lightning as pl
import torch
from mlflow.tracking import MlflowClient

from bert_lm.training.pretraining_run import ConfigError, check_writable, pretrain
from tests.conftest import REPO_ROOT
from tests.test_run_pretraining import compose_config, tiny_overrides


class InjectNaN(pl.Callback):
    """Test-only: poisons the weights before a given step, as a diverged run would."""

    def __init__(self, at_step: int):
        self.at_step = at_step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.at_step:
            with torch.no_grad():
                pl_module.model.bert.embeddings.LayerNorm.weight.fill_(float("nan"))


def test_nan_loss_stops_with_message_and_keeps_the_checkpoint_before(tmp_path):
    overrides = tiny_overrides(
        tmp_path, "trainer.max_steps=20", "callbacks.model_checkpoint.every_n_train_steps=2",
        "+callbacks.nan._target_=tests.test_faults.InjectNaN", "+callbacks.nan.at_step=5",
    )
    with pytest.raises(FloatingPointError, match=r"training loss is nan at global step 5.*ckpt_path"):
        pretrain(compose_config(overrides), overrides)
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert state["global_step"] == 4
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point())


def test_crash_while_writing_a_checkpoint_leaves_the_previous_one(tmp_path, monkeypatch):
    from fsspec.implementations.local import LocalFileOpener

    model = torch.nn.Linear(2, 2)
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, max_steps=0)
    module = pl.LightningModule()
    module.layer = model
    trainer.strategy.connect(module)
    path = tmp_path / "last.ckpt"
    trainer.save_checkpoint(path)
    before = torch.load(path, weights_only=True)

    def crash_halfway(self, data):
        self.f.write(data[: len(data) // 2])
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(LocalFileOpener, "write", crash_halfway)
    with torch.no_grad():
        model.weight.add_(1.0)
    with pytest.raises(OSError, match="simulated"):
        trainer.save_checkpoint(path)
    after = torch.load(path, weights_only=True)  # still the complete earlier file
    assert torch.equal(after["state_dict"]["layer.weight"], before["state_dict"]["layer.weight"])


def test_unwritable_output_directory_is_reported_before_training(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError, match=r"paths.output_dir=.*a_file/run is not writable"):
        check_writable(blocker / "run", "paths.output_dir")
    overrides = tiny_overrides(tmp_path, f"paths.output_dir={blocker / 'run'}")
    with pytest.raises(ConfigError, match="not writable"):
        pretrain(compose_config(overrides), overrides)
    assert not (tmp_path / "cache").exists(), "no data work before the check"


@pytest.mark.parametrize("objective", ["mlm", "electra"])
def test_kill_9_then_resume_continues_step_and_mlflow_run(tmp_path, objective):
    extra = ["train.objective=electra", "model.generator_size=0.5"] if objective == "electra" else []
    overrides = tiny_overrides(tmp_path, "trainer.max_steps=400", "callbacks.model_checkpoint.every_n_train_steps=3",
                               "trainer.val_check_interval=1.0", "trainer.max_epochs=1000", *extra)
    process = subprocess.Popen([sys.executable, "run.py", *overrides], cwd=REPO_ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if last.is_file() and torch.load(last, weights_only=True)["global_step"] >= 6:
                break
            if process.poll() is not None:
                pytest.fail("the training run ended before it could be killed")
            time.sleep(0.5)
        else:
            pytest.fail("no checkpoint at step >= 6 within 240 s")
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    saved_step = torch.load(last, weights_only=True)["global_step"]
    run_id = (tmp_path / "run" / "mlflow_run_id").read_text()

    resume = tiny_overrides(tmp_path, f"ckpt_path={tmp_path / 'run'}", f"trainer.max_steps={saved_step + 3}",
                            "trainer.val_check_interval=1.0", "trainer.max_epochs=1000", *extra)
    pretrain(compose_config(resume), resume)
    assert torch.load(last, weights_only=True)["global_step"] == saved_step + 3
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    history = client.get_metric_history(run_id, "train/mlm_loss_step")
    assert max(m.step for m in history) >= saved_step, "the same MLflow run continues"
    assert client.get_run(run_id).info.status == "FINISHED"

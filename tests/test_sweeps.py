"""Hydra multirun sweeps: one MLflow run per combination, also with DDP workers."""

import subprocess
import sys

from mlflow.tracking import MlflowClient

from bert_lm.config.hydra_setup import DDP_JOB_ENV, argv_for_ddp_worker, export_job_for_ddp_workers
from tests.conftest import REPO_ROOT


def sweep_args(tmp_path, *extra):
    return [
        "-m", "data.batch_size=8", "trainer.max_steps=2", "trainer.enable_progress_bar=false",
        "trainer.val_check_interval=1.0", "trainer.limit_val_batches=1", "callbacks.throughput.window_size=2",
        f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.sweep.dir={tmp_path / 'sweep'}",
        f"logger.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}", f"logger.artifact_location={tmp_path / 'art'}",
        *extra,
    ]


def run_names(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("bert-lm-pretraining")
    return sorted(r.info.run_name for r in client.search_runs([experiment.experiment_id]))


def test_sweep_gives_one_mlflow_run_per_combination(tmp_path):
    result = subprocess.run(
        [sys.executable, "run.py", *sweep_args(tmp_path, "model=tiny,small", "train.train_nsp=true,false")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    names = run_names(tmp_path)
    assert len(names) == 4
    assert any("model=small" in n and "train.train_nsp=false" in n.lower() for n in names), names
    assert not any("paths." in n or "logger." in n for n in names), "run names hold what is trained, not where"


def test_ddp_workers_in_a_sweep_run_their_own_job(tmp_path):
    # Two CPU ranks (gloo) per job: Lightning re-runs run.py for rank 1 with the
    # parent's arguments; without the guard rank 1 would start a sweep of its own.
    result = subprocess.run(
        [sys.executable, "run.py", *sweep_args(tmp_path, "model=tiny", "train.train_nsp=true,false", "strategy=ddp",
                                               "trainer.accelerator=cpu", "trainer.devices=2")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(run_names(tmp_path)) == 2


def test_worker_argv_is_its_jobs_overrides(monkeypatch):
    monkeypatch.delenv(DDP_JOB_ENV, raising=False)
    export_job_for_ddp_workers(["model=small", "train.train_nsp=false"], "/runs/3")
    lightning_argv = ["run.py", "-m", "model=tiny,small", "train.train_nsp=true,false",
                      'hydra.run.dir="outputs/x"', "hydra.job.name=train_ddp_process_1", "hydra.output_subdir=null"]
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert argv_for_ddp_worker(lightning_argv) == lightning_argv  # the parent itself: unchanged
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert argv_for_ddp_worker(lightning_argv) == [
        "run.py", "model=small", "train.train_nsp=false", "hydra.run.dir=/runs/3",
        "hydra.job.name=train_ddp_process_1", "hydra.output_subdir=null",
    ]

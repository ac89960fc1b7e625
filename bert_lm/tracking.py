"""The MLflow store of the standalone commands (``python -m bert_lm.evaluate``,
``python -m finetune.compare``): the project's own store by default, the one
``conf/logger/mlflow.yaml`` gives ``run.py`` and ``run_finetune.py``, so that
``mlflow ui`` shows training runs, evaluations and comparisons side by side.

Kept free of Lightning so that these commands start fast.
"""

from __future__ import annotations

from pathlib import Path

from bert_lm.config.hydra_setup import PROJECT_ROOT

DEFAULT_TRACKING_URI = f"sqlite:///{PROJECT_ROOT / 'mlflow.db'}"
# Written by every training job into its run directory: the id of its MLflow run, which
# evaluations and comparisons tag, so each links back to the runs it is about.
MLFLOW_RUN_ID_FILE = "mlflow_run_id"


def ensure_experiment(client, name: str, tracking_uri: str) -> str:
    """The id of experiment ``name`` (created, or restored if deleted): artifacts beside a local
    sqlite store in ``mlartifacts/``, as the training jobs keep them; a server decides for itself."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        local = tracking_uri.startswith("sqlite:///")
        artifacts = str(Path(tracking_uri.removeprefix("sqlite:///")).parent / "mlartifacts") if local else None
        return client.create_experiment(name, artifact_location=artifacts)
    if experiment.lifecycle_stage == "deleted":
        client.restore_experiment(experiment.experiment_id)
    return experiment.experiment_id


def run_id_of(run_dir: str | Path) -> str | None:
    """The MLflow run id a training job left in ``run_dir``, if any."""
    path = Path(run_dir) / MLFLOW_RUN_ID_FILE
    return path.read_text(encoding="utf-8").strip() if path.is_file() else None

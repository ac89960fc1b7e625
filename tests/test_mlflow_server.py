"""`mlflow server` for real: a tiny pretraining run, then its params, metrics, metric
history and artifacts read back through the server's REST API (127.0.0.1 only)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import requests

from bert_lm.training.pretraining_run import pretrain
from tests.test_run_pretraining import compose_config, tiny_overrides

EXPERIMENT = "bert-lm-pretraining"
SERVER_START_TIMEOUT_S = 60


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_healthy(base_url: str, server: subprocess.Popen, log_path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"mlflow server exited with {server.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            if requests.get(f"{base_url}/health", timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.5)
    pytest.fail(f"mlflow server did not answer /health in {SERVER_START_TIMEOUT_S} s:\n{log_path.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def served_run(tmp_path_factory):
    """(REST base URL, tmp dir) of a server over a store holding one tiny pretraining run."""
    tmp_path = tmp_path_factory.mktemp("mlflow_server")
    overrides = tiny_overrides(tmp_path, "train.train_nsp=false")
    pretrain(compose_config(overrides), overrides)

    port = _free_port()
    log_path = tmp_path / "server.log"
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
        # The run's experiment already names its local artifact_location (tmp_path/artifacts),
        # which the server lists directly; these two only keep new experiments and proxied
        # uploads inside tmp_path instead of ./mlartifacts.
        "--default-artifact-root", str(tmp_path / "artifacts"),
        "--artifacts-destination", str(tmp_path / "served_artifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    with open(log_path, "wb") as log_file:
        server = subprocess.Popen(command, cwd=tmp_path, stdout=log_file, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    try:
        base_url = f"http://127.0.0.1:{port}"
        started = time.monotonic()
        _wait_until_healthy(base_url, server, log_path)
        print(f"mlflow server answered after {time.monotonic() - started:.1f} s")
        yield f"{base_url}/api/2.0/mlflow", tmp_path
    finally:
        # The server's own session: its uvicorn workers stop with it.
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=15)


def _get(url: str, **params) -> dict:
    response = requests.get(url, params=params, timeout=10)
    assert response.status_code == 200, f"{url} {params}: {response.status_code} {response.text[:500]}"
    return response.json()


def test_server_serves_run_params_metrics_history_and_artifacts(served_run):
    api, _ = served_run
    experiment = _get(f"{api}/experiments/get-by-name", experiment_name=EXPERIMENT)["experiment"]

    response = requests.post(f"{api}/runs/search", json={"experiment_ids": [experiment["experiment_id"]]}, timeout=10)
    assert response.status_code == 200, response.text[:500]
    (run,) = response.json()["runs"]
    run_id = run["info"]["run_id"]
    assert _get(f"{api}/runs/get", run_id=run_id)["run"]["info"]["status"] == "FINISHED"

    params = {p["key"]: p["value"] for p in run["data"]["params"]}
    assert params["model/hidden_size"] == "64"
    assert params["train/train_nsp"] == "False"
    metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
    assert "val/mlm_loss" in metrics and metrics["val/mlm_loss"] > 0
    assert "train/mlm_loss_step" in metrics

    history = _get(f"{api}/metrics/get-history", run_id=run_id, metric_key="train/mlm_loss_step")["metrics"]
    assert sorted(m["step"] for m in history) == [0, 1, 2, 3], "one point per training step (max_steps=4)"
    val_history = _get(f"{api}/metrics/get-history", run_id=run_id, metric_key="val/mlm_loss")["metrics"]
    assert len(val_history) >= 2, "validation every 2 steps, then the final validation"

    top_level = {f["path"]: f for f in _get(f"{api}/artifacts/list", run_id=run_id)["files"]}
    assert {"hf_export", "tokenizer", "resolved_config.yaml"} <= set(top_level)
    assert top_level["hf_export"]["is_dir"] and not top_level["resolved_config.yaml"]["is_dir"]
    exported = {f["path"] for f in _get(f"{api}/artifacts/list", run_id=run_id, path="hf_export")["files"]}
    assert {"hf_export/config.json", "hf_export/tokenizer.json"} <= exported


def test_unknown_experiment_is_a_404_with_mlflow_error_code(served_run):
    api, _ = served_run
    response = requests.get(f"{api}/experiments/get-by-name", params={"experiment_name": "no-such-experiment"},
                            timeout=10)
    assert response.status_code == 404
    assert response.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"

"""Does ``train.budget_minutes`` count the time training really takes, on this device?

    python bench/budget_clock.py            # MINUTES=1, MODEL=small by default
    MODEL=base python bench/budget_clock.py # on a GPU: steps long enough to see the clock's error

The budget counts the seconds spent in training batches (forward, backward, optimizer
step), which on a GPU only means something if the clock is read after the batch's
queued kernels have finished (bert_lm/training/budget.py synchronises CUDA for that).
This pretrains the recipe's model on the bundled sample for ``MINUTES`` of budget with
no validation or checkpoint in between, then compares the budget's own count with the
wall-clock between its first and last logged step (MLflow's timestamps of
``train/budget_elapsed_min``). What the budget leaves out on purpose (loading and masking
the next batch, callbacks, logging) is a fixed cost per step, so the ratio wall / budget is
about 1 only where a step is long against it: on this CPU with ``model=small``, or on a
GPU with ``MODEL=base`` (a ``model=small`` step there takes milliseconds, and the fixed
cost alone would raise the ratio). With a step that long, a ratio near 2-3 would mean the
clock misses the backward pass.

Prints ``budget_wall_ratio: <wall / budget>`` last. Not part of the tests.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
MINUTES = float(os.environ.get("MINUTES", "1"))
MODEL = os.environ.get("MODEL", "small")


def main() -> None:
    import torch
    from mlflow.tracking import MlflowClient

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu ({os.cpu_count()} cpus)"
    with tempfile.TemporaryDirectory() as tmp:
        tracking_uri = f"sqlite:///{tmp}/mlflow.db"
        command = [
            sys.executable, "run.py", "experiment=small_budget", f"model={MODEL}", f"train.budget_minutes={MINUTES}",
            # One validation at the end only (the run's own), no checkpoint before it: the span measured
            # holds training batches, their data loading and logging, nothing else.
            "trainer.val_check_interval=100000000", "trainer.log_every_n_steps=25", "trainer.enable_progress_bar=false",
            f"paths.cache_dir={tmp}/cache", f"hydra.run.dir={tmp}/run", f"logger.tracking_uri={tracking_uri}",
            f"logger.artifact_location={tmp}/artifacts",
        ]  # fmt: skip
        result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
        if result.returncode != 0:
            sys.exit(f"pretraining failed:\n{result.stderr[-3000:]}")
        client = MlflowClient(tracking_uri)
        run_id = (Path(tmp) / "run" / "mlflow_run_id").read_text().strip()
        history = sorted(client.get_metric_history(run_id, "train/budget_elapsed_min"), key=lambda m: m.step)
        used = re.search(r"budget: ([\d.]+) of", result.stdout)
    first, last = history[0], history[-1]
    budget_s = 60.0 * (last.value - first.value)
    wall_s = (last.timestamp - first.timestamp) / 1000.0
    print(
        f"device: {device}; model={MODEL}, budget {MINUTES} min ({used.group(1) if used else '?'} used), steps {first.step}-{last.step}"
    )
    print(f"budget counted {budget_s:.1f} s of training batches over {wall_s:.1f} s of wall-clock between those steps")
    print(f"budget_wall_ratio: {wall_s / budget_s:.3f}")


if __name__ == "__main__":
    main()

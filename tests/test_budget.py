"""Time-budgeted training: the schedule follows elapsed training time, the run stops at the
budget and still checkpoints, validates and exports, and a resume continues the same clock."""

from __future__ import annotations

import pytest
import torch
from torch.optim.lr_scheduler import LambdaLR

from bert_lm.training.budget import TrainingBudget, budget_schedule
from bert_lm.training.pretraining_run import ConfigError, check_config, pretrain
from tests.test_run_pretraining import compose_config, tiny_overrides


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeTrainer:
    should_stop = False
    world_size = 1


class FakeModule:
    device = torch.device("cpu")

    def log(self, *args, **kwargs):
        pass


def test_schedule_by_elapsed_share():
    linear = budget_schedule("linear", warmup_ratio=0.1)
    assert linear(0.05) == pytest.approx(0.5)
    assert linear(0.1) == pytest.approx(1.0)
    assert linear(0.55) == pytest.approx(0.5)
    assert linear(1.0) == 0.0 and linear(1.5) == 0.0
    assert budget_schedule("constant", 0.1)(0.9) == 1.0
    with pytest.raises(ValueError, match="train.warmup_ratio"):
        budget_schedule("linear", 1.0)


def test_learning_rate_at_given_elapsed_times_and_stop_at_the_budget():
    clock = FakeClock()
    budget = TrainingBudget(minutes=1.0, clock=clock)  # 60 s
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = budget_schedule("linear", warmup_ratio=0.25)
    scheduler = LambdaLR(optimizer, lambda _step: schedule(budget.fraction))
    trainer, module = FakeTrainer(), FakeModule()
    seen = {}
    for seconds in (6, 9, 15, 15, 15):  # elapsed 6, 15, 30, 45, 60
        budget.on_train_batch_start(trainer, module, None, 0)
        clock.now += seconds
        budget.on_train_batch_end(trainer, module, None, None, 0)
        clock.now += 100  # validation, checkpoints: not training time
        optimizer.step()
        scheduler.step()
        seen[budget.elapsed_s] = optimizer.param_groups[0]["lr"]
        assert trainer.should_stop == (budget.elapsed_s >= 60)
    assert seen[6] == pytest.approx(6 / 15)  # warmup: 15 s is a quarter of the budget
    assert seen[15] == pytest.approx(1.0)
    assert seen[30] == pytest.approx(2 / 3)  # (1 - 0.5) / 0.75
    assert seen[60] == 0.0
    state = budget.state_dict()
    restored = TrainingBudget(minutes=2.0)
    restored.load_state_dict(state)
    assert restored.elapsed_s == 60 and restored.fraction == pytest.approx(0.5)


def test_budget_settings_are_checked_before_data_work():
    with pytest.raises(ConfigError, match="train.budget_minutes=0"):
        check_config(compose_config(["train.budget_minutes=0"]))
    with pytest.raises(ConfigError, match="train.warmup_steps is set together with train.budget_minutes"):
        check_config(compose_config(["train.budget_minutes=5", "train.warmup_steps=100"]))


def budget_overrides(tmp_path, minutes):
    return tiny_overrides(
        tmp_path,
        "train.train_nsp=false",
        f"train.budget_minutes={minutes}",
        "trainer.val_check_interval=1.0",
        "trainer.log_every_n_steps=100",
        "trainer.max_steps=2",
    )


def checkpoint_state(run_dir):
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    (budget,) = [v for k, v in state["callbacks"].items() if k.startswith("TrainingBudget")]
    return state["global_step"], budget["elapsed_s"]


@pytest.mark.slow
def test_run_stops_at_the_budget_and_resume_continues_its_clock(tmp_path):
    overrides = budget_overrides(tmp_path, 0.1)  # 6 s of training batches
    run_dir, hf_dir = pretrain(compose_config(overrides), overrides)
    steps, elapsed = checkpoint_state(run_dir)
    assert 6.0 <= elapsed < 6.0 + 3.0, elapsed  # stopped at the budget (within one batch)
    assert steps > 2, "trainer.max_steps must not apply under a budget"
    assert (hf_dir / "model.safetensors").is_file()
    # Resumed with the same budget: the clock is restored, so it is already spent.
    resumed = budget_overrides(tmp_path, 0.1) + [f"ckpt_path={run_dir}"]
    pretrain(compose_config(resumed), resumed)
    steps_after, elapsed_after = checkpoint_state(run_dir)
    assert steps_after - steps <= 1 and elapsed_after >= elapsed
    # Raised budget: it continues from the elapsed time, not from zero.
    longer = budget_overrides(tmp_path, 0.15) + [f"ckpt_path={run_dir}"]
    pretrain(compose_config(longer), longer)
    steps_longer, elapsed_longer = checkpoint_state(run_dir)
    assert 9.0 <= elapsed_longer < 9.0 + 3.0 and steps_longer > steps_after


@pytest.mark.slow
def test_ddp_processes_share_one_clock_so_they_stop_together(tmp_path):
    """Two real DDP processes whose clocks disagree threefold step with the same learning rates
    and stop on the same batch (else the faster clock's process stops first and the run hangs)."""
    import json
    import os
    import signal
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    command = [sys.executable, "tests/ddp_budget_script.py", str(tmp_path)]
    # Its own process group: on a hang, both DDP processes are killed, not only the launcher.
    process = subprocess.Popen(
        command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        _, stderr = process.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail("the DDP processes did not finish: one stopped at the budget while the other waited")
    assert process.returncode == 0, stderr[-3000:]
    rank0, rank1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert rank0["global_step"] == rank1["global_step"] > 3
    assert rank0["lrs"] == rank1["lrs"]
    assert rank0["elapsed_s"] == rank1["elapsed_s"] >= 12.0
    peak = max(rank0["lrs"])
    assert peak == pytest.approx(1e-3, rel=0.3) and rank0["lrs"][-1] < 0.5 * peak  # warmed up, then decayed

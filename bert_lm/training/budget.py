"""Time-budgeted training (cramming's idea): ``train.budget_minutes=<m>``.

A user with an hour of compute should not have to guess how many steps fit into it to
get a sane learning-rate schedule. :class:`TrainingBudget` measures the time spent in
training batches (forward, backward, optimizer step; not validation or checkpointing),
stops the run when it reaches the budget, and exposes the elapsed share of the budget,
which the schedule (:func:`budget_schedule`) follows instead of the step count: warmup
over the first ``warmup_ratio`` of the budget, then decay to zero at its end.

The elapsed time is the callback's state, saved in every checkpoint, so a resumed run
continues the same schedule where it stopped. Under DDP (and across nodes) every process
times its own batches; after each batch they all take the slowest process's clock, so that
they step with one learning rate and stop on the same batch (a process that stopped one
batch earlier would leave the others waiting in a collective for ever).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch


def budget_schedule(name: str, warmup_ratio: float) -> Callable[[float], float]:
    """lr multiplier for the elapsed share ``f`` of the budget: linear warmup over
    ``warmup_ratio``, then ``linear`` decay to 0 at ``f = 1`` or ``constant``."""
    if name not in ("linear", "constant"):
        raise ValueError(f"train.scheduler={name!r}: use 'linear' or 'constant'")
    if not 0.0 <= warmup_ratio < 1.0:
        raise ValueError(f"train.warmup_ratio={warmup_ratio}: must be in [0, 1) with train.budget_minutes")

    def multiplier(fraction: float) -> float:
        fraction = min(max(fraction, 0.0), 1.0)
        if fraction < warmup_ratio:
            # Never exactly 0: the first step still moves the weights a little, as the step schedule does.
            return max(fraction / warmup_ratio, 1e-3)
        if name == "constant":
            return 1.0
        return max(0.0, (1.0 - fraction) / (1.0 - warmup_ratio))

    return multiplier


class TrainingBudget(pl.Callback):
    """Counts seconds spent in training batches; stops the run at ``minutes``."""

    def __init__(self, minutes: float, clock: Callable[[], float] = time.monotonic):
        if not minutes > 0:
            raise ValueError(f"train.budget_minutes={minutes}: must be > 0")
        self.budget_s = 60.0 * minutes
        self.elapsed_s = 0.0
        self._clock = clock
        self._batch_started: float | None = None

    @property
    def fraction(self) -> float:
        """Elapsed share of the budget, in [0, 1]."""
        return min(1.0, self.elapsed_s / self.budget_s)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int):
        self._batch_started = self._clock()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch: Any, batch_idx: int) -> None:
        if self._batch_started is not None:
            if pl_module.device.type == "cuda":
                # The batch's backward and optimizer kernels may still be queued: count them in this batch.
                torch.cuda.synchronize(pl_module.device)
            self.elapsed_s += self._clock() - self._batch_started
            self._batch_started = None
        if trainer.world_size > 1:
            # One clock for every process: the slowest one's (a float64 scalar all-reduce per batch).
            elapsed = torch.tensor(self.elapsed_s, dtype=torch.float64, device=pl_module.device)
            self.elapsed_s = float(trainer.strategy.reduce(elapsed, reduce_op="max"))
        pl_module.log("train/budget_elapsed_min", self.elapsed_s / 60.0, on_step=True, on_epoch=False)
        if self.elapsed_s >= self.budget_s:
            trainer.should_stop = True

    def state_dict(self) -> dict[str, float]:
        return {"elapsed_s": self.elapsed_s, "budget_s": self.budget_s}

    def load_state_dict(self, state_dict: dict[str, float]) -> None:
        # The budget itself is today's setting (it may have been raised for the resume);
        # the time already spent is what the checkpoint says.
        self.elapsed_s = float(state_dict["elapsed_s"])


def find_budget(trainer: pl.Trainer) -> TrainingBudget | None:
    return next((c for c in getattr(trainer, "callbacks", []) if isinstance(c, TrainingBudget)), None)

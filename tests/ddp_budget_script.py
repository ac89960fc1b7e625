"""Two DDP processes on the CPU under one time budget, each with its own clock.

    python tests/ddp_budget_script.py <out_dir>

Run by ``tests/test_budget.py``. Process 1's clock runs three times as fast as process 0's,
the way a process that waits longer on its data loader or a collective measures more
time. The real PretrainingModule (so the real budget schedule wiring) trains a tiny
model on random masked batches until the budget stops it; each process writes the
learning rate it stepped with at every step to ``<out_dir>/rank<N>.json``. Without one
shared clock, process 1 would stop first and leave process 0 waiting in the gradient
all-reduce for ever.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bert_lm.models.bert import IGNORE_INDEX  # noqa: E402
from bert_lm.training.budget import TrainingBudget  # noqa: E402
from bert_lm.training.pretraining_module import PretrainingModule  # noqa: E402

VOCAB, SEQ_LEN, BATCH = 40, 8, 4
TINY = {
    "vocab_size": VOCAB,
    "hidden_size": 16,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 32,
    "max_position_embeddings": SEQ_LEN,
    "pad_token_id": 0,
}


class RandomMaskedBatches(Dataset):
    def __len__(self) -> int:
        return 100_000  # the budget stops the run long before an epoch ends

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(index)
        input_ids = torch.randint(5, VOCAB, (SEQ_LEN,), generator=generator)
        mlm_labels = torch.full((SEQ_LEN,), IGNORE_INDEX)
        mlm_labels[::3] = input_ids[::3]
        return {
            "input_ids": input_ids,
            "attention_mask": torch.ones(SEQ_LEN, dtype=torch.long),
            "mlm_labels": mlm_labels,
        }


class SkewedBudget(TrainingBudget):
    """Process N's clock runs (1 + 2N) times as fast."""

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        speed = 1 + 2 * trainer.global_rank
        self._clock = lambda: speed * time.monotonic()


class LearningRates(pl.Callback):
    def __init__(self, out_dir: Path):
        self.out_dir, self.lrs = out_dir, []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])  # the lr this step's update uses

    def on_train_end(self, trainer, pl_module) -> None:
        record = {"global_step": trainer.global_step, "lrs": self.lrs, "elapsed_s": find_budget(trainer).elapsed_s}
        (self.out_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


def find_budget(trainer: pl.Trainer) -> TrainingBudget:
    return next(c for c in trainer.callbacks if isinstance(c, TrainingBudget))


def main(out_dir: Path) -> None:
    pl.seed_everything(0)
    module = PretrainingModule(TINY, train_nsp=False, lr=1e-3, scheduler="linear", warmup_ratio=0.2)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        max_epochs=-1,
        max_steps=-1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[SkewedBudget(minutes=0.2), LearningRates(out_dir)],  # 12 s on process 0's clock, 4 s real
    )
    trainer.fit(module, DataLoader(RandomMaskedBatches(), batch_size=BATCH))


if __name__ == "__main__":
    main(Path(sys.argv[1]))

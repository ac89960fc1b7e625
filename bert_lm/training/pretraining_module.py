"""The pretraining system: BertForPreTraining + objectives, metrics, optimizer, schedule.

The model (:mod:`bert_lm.models.bert`) stays plain PyTorch; this LightningModule owns
what belongs to training. Hyperparameters are saved as plain containers (a
``DictConfig`` in hparams makes ``torch.load(weights_only=True)`` fail).

Metrics per split, as torchmetrics aggregated over the epoch:
``{split}/mlm_loss``, ``{split}/mlm_acc``, ``{split}/perplexity`` (exp of the
epoch's mean MLM loss), ``{split}/nsp_loss``, ``{split}/nsp_acc``; tokens/s comes
from Lightning's ThroughputMonitor callback (``train/device/items_per_sec``), which
also logs ``train/device/flops_per_sec`` (and ``train/device/mfu`` on GPUs whose
peak it knows) from :attr:`PretrainingModule.flops_per_batch`.
"""

from __future__ import annotations

import math
from typing import Any

import pytorch_lightning as pl
import torch
import torchmetrics
from torch.optim.lr_scheduler import LambdaLR

from bert_lm.models.bert import IGNORE_INDEX, BertConfig, BertForPreTraining, training_matmul_flops
from bert_lm.training.budget import budget_schedule, find_budget

SPLITS = ("train", "val")
# ModuleDict keys cannot be "train" (nn.Module.train exists): metrics live under "<split>_metrics".
_KEY = "{}_metrics".format


def warmup_schedule(name: str, warmup_steps: int, total_steps: int):
    """lr multiplier per step: linear warmup, then ``linear`` decay to 0 or ``constant``."""
    if name not in ("linear", "constant"):
        raise ValueError(f"train.scheduler={name!r}: use 'linear' or 'constant'")

    def multiplier(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        if name == "constant":
            return 1.0
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return multiplier


class PretrainingModule(pl.LightningModule):
    def __init__(
        self,
        model_config: dict[str, Any],
        train_mlm: bool = True,
        train_nsp: bool = True,
        lr: float = 1e-4,
        weight_decay: float = 0.01,
        adam_eps: float = 1e-6,
        betas: tuple[float, float] = (0.9, 0.999),
        scheduler: str = "linear",
        warmup_steps: int | None = None,
        warmup_ratio: float = 0.06,
        optimizer: str = "torch_adamw",
    ):
        super().__init__()
        if optimizer not in ("torch_adamw", "deepspeed_cpu_adam"):
            raise ValueError(f"strategy.optimizer={optimizer!r}: use 'torch_adamw' or 'deepspeed_cpu_adam'")
        if not (train_mlm or train_nsp):
            raise ValueError("train.train_mlm and train.train_nsp are both false: enable at least one objective")
        # Into checkpoints only: run.py logs the whole config to MLflow itself, and a resume that changes a
        # setting (train.lr) records it as a resume/ tag; Lightning's own logging would change a logged param,
        # which MLflow refuses.
        self.save_hyperparameters(logger=False)
        self.model = BertForPreTraining(BertConfig(**model_config))
        self._freeze_unused_heads()
        self.metrics = torch.nn.ModuleDict({_KEY(split): self._split_metrics() for split in SPLITS})
        # Matmul FLOPs of the current batch, read by Lightning's ThroughputMonitor.
        self.flops_per_batch: float | None = None

    def _count_flops(self, batch: dict[str, torch.Tensor], training: bool) -> None:
        batch_size, seq_len = batch["input_ids"].shape
        # The sparse MLM head projects only the masked positions onto the vocabulary.
        mlm_rows = int((batch["mlm_labels"] != IGNORE_INDEX).sum()) if self.hparams.train_mlm else 0
        flops = training_matmul_flops(self.model.config, batch_size, seq_len, mlm_rows)
        self.flops_per_batch = flops if training else flops / 3  # no backward in evaluation

    def on_train_batch_start(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._count_flops(batch, training=True)

    def on_validation_batch_start(self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._count_flops(batch, training=False)

    def _freeze_unused_heads(self) -> None:
        """Heads of a switched-off objective get no gradient: DDP would otherwise stop
        with "parameters that were not used in producing the loss" (and
        find_unused_parameters=True costs an extra graph traversal every step)."""
        unused = []
        if not self.hparams.train_nsp:
            unused += [self.model.bert.pooler, self.model.cls.seq_relationship]
        if not self.hparams.train_mlm:
            unused += [self.model.cls.predictions.transform]
            self.model.cls.predictions.bias.requires_grad_(False)
        for module in unused:
            module.requires_grad_(False)

    @staticmethod
    def _split_metrics() -> torch.nn.ModuleDict:
        return torch.nn.ModuleDict(
            {
                "mlm_loss": torchmetrics.MeanMetric(),
                # Accuracy over masked tokens: a weighted mean, weighted by tokens per batch.
                "mlm_acc": torchmetrics.MeanMetric(),
                "nsp_loss": torchmetrics.MeanMetric(),
                "nsp_acc": torchmetrics.classification.MulticlassAccuracy(num_classes=2, average="micro"),
            }
        )

    def forward(self, batch: dict[str, torch.Tensor]):
        return self.model(
            batch["input_ids"],
            batch.get("token_type_ids"),
            batch.get("attention_mask"),
            mlm_labels=batch["mlm_labels"] if self.hparams.train_mlm else None,
            nsp_labels=batch.get("nsp_labels") if self.hparams.train_nsp else None,
        )

    def _shared_step(self, batch: dict[str, torch.Tensor], split: str) -> torch.Tensor:
        if self.hparams.train_nsp and "nsp_labels" not in batch:
            raise ValueError("train.train_nsp=true but the batches carry no nsp_labels: the data module was "
                             "built with train_nsp=false")
        out = self(batch)
        metrics = self.metrics[_KEY(split)]
        batch_size = batch["input_ids"].size(0)
        on_step = split == "train"
        if out.mlm_loss is not None:
            # Calling a metric (not .update) also keeps this batch's value for on_step logging.
            if out.mlm_count > 0:
                # A batch with nothing masked has no MLM loss to average in (weight 1 at 0 would pull it down).
                metrics["mlm_loss"](out.mlm_loss.detach(), weight=out.mlm_count)
                metrics["mlm_acc"](out.mlm_correct / out.mlm_count, weight=out.mlm_count)
            self.log(f"{split}/mlm_loss", metrics["mlm_loss"], on_step=on_step, on_epoch=True,
                     prog_bar=True, batch_size=batch_size)
            self.log(f"{split}/mlm_acc", metrics["mlm_acc"], on_step=on_step, on_epoch=True, batch_size=batch_size)
        if out.nsp_loss is not None:
            metrics["nsp_loss"](out.nsp_loss.detach(), weight=batch_size)
            metrics["nsp_acc"](out.nsp_logits.detach(), batch["nsp_labels"])
            self.log(f"{split}/nsp_loss", metrics["nsp_loss"], on_step=on_step, on_epoch=True, batch_size=batch_size)
            self.log(f"{split}/nsp_acc", metrics["nsp_acc"], on_step=on_step, on_epoch=True, batch_size=batch_size)
        return out.loss

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self._shared_step(batch, "train")
        if not torch.isfinite(loss):
            # Stop before the optimizer applies a NaN update; the last checkpoint
            # written before this step is still good.
            raise FloatingPointError(
                f"training loss is {loss.item()} at global step {self.global_step}: lower train.lr, raise "
                "train.warmup_steps or use impl.precision=32; resume from the last checkpoint with ckpt_path=<run dir>"
            )
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def _log_perplexity(self, split: str) -> None:
        metric = self.metrics[_KEY(split)]["mlm_loss"]
        if self.hparams.train_mlm and metric.update_called:
            # min() keeps exp() finite while the loss is still large early in training.
            self.log(f"{split}/perplexity", math.exp(min(float(metric.compute()), 50.0)), on_epoch=True)

    def on_train_epoch_end(self) -> None:
        self._log_perplexity("train")

    def on_validation_epoch_end(self) -> None:
        self._log_perplexity("val")

    def configure_optimizers(self):
        return pretraining_optimizers(self, self.model.named_parameters())


def pretraining_optimizers(module: pl.LightningModule, named_parameters) -> dict:
    """AdamW (or DeepSpeed's CPU Adam under ZeRO-Offload) without weight decay on biases and
    LayerNorm weights, as in the original BERT; the schedule follows the step count, or the
    elapsed share of ``train.budget_minutes`` when the Trainer carries a TrainingBudget."""
    hparams = module.hparams
    decay, no_decay = [], []
    for name, param in named_parameters:
        if not param.requires_grad:
            continue
        (no_decay if name.endswith("bias") or "LayerNorm" in name else decay).append(param)
    groups = [{"params": decay, "weight_decay": hparams.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if hparams.optimizer == "deepspeed_cpu_adam":
        # ZeRO-Offload steps the optimizer on the CPU and refuses a torch optimizer.
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        optimizer = DeepSpeedCPUAdam(
            groups, lr=hparams.lr, betas=tuple(hparams.betas), eps=hparams.adam_eps, adamw_mode=True
        )
    else:
        optimizer = torch.optim.AdamW(groups, lr=hparams.lr, betas=tuple(hparams.betas), eps=hparams.adam_eps)
    budget = find_budget(module.trainer)
    if budget is not None:
        # train.budget_minutes: warmup and decay follow the elapsed share of the time budget, not
        # the step count. (Not an hparam: a resume may raise the budget, and MLflow params are final.)
        schedule = budget_schedule(hparams.scheduler, hparams.warmup_ratio)
        scheduler = LambdaLR(optimizer, lambda _step: schedule(budget.fraction))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
    total_steps = int(module.trainer.estimated_stepping_batches)
    # An explicit warmup_steps wins; otherwise a fraction of the run, so that a
    # short run on a small corpus still reaches its peak learning rate.
    warmup_steps = hparams.warmup_steps
    if warmup_steps is None:
        warmup_steps = max(1, round(hparams.warmup_ratio * total_steps))
    schedule = warmup_schedule(hparams.scheduler, warmup_steps, total_steps)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": LambdaLR(optimizer, schedule), "interval": "step"}}

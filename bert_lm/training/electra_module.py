"""The ELECTRA pretraining system (``train.objective=electra``): generator + discriminator
(:class:`bert_lm.models.electra.ElectraForPretraining`), their metrics, the optimizer and
schedule shared with MLM pretraining (:func:`pretraining_optimizers`, time budgets included).

Metrics per split (torchmetrics, aggregated over the epoch, logged per step in training):
``{split}/mlm_loss`` and ``{split}/mlm_acc`` (the generator, on masked positions),
``{split}/disc_loss``, ``{split}/disc_acc`` (every scored token),
``{split}/disc_acc_replaced`` and ``{split}/disc_acc_original`` (on replaced and on original
tokens), ``{split}/replaced_share`` (share of scored tokens the generator replaced) and
``{split}/loss`` (mlm_loss + disc_weight x disc_loss).
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
import torchmetrics

from bert_lm.models.bert import BertConfig
from bert_lm.models.electra import ElectraForPretraining
from bert_lm.training.pretraining_module import pretraining_optimizers

SPLITS = ("train", "val")
METRICS = ("loss", "mlm_loss", "mlm_acc", "disc_loss", "disc_acc", "disc_acc_replaced", "disc_acc_original",
           "replaced_share")


class ElectraPretrainingModule(pl.LightningModule):
    def __init__(
        self,
        model_config: dict[str, Any],
        special_ids: list[int],
        generator_size: float = 0.25,
        disc_weight: float = 50.0,
        lr: float = 5e-4,
        weight_decay: float = 0.01,
        adam_eps: float = 1e-6,
        betas: tuple[float, float] = (0.9, 0.999),
        scheduler: str = "linear",
        warmup_steps: int | None = None,
        warmup_ratio: float = 0.06,
        optimizer: str = "torch_adamw",
    ):
        super().__init__()
        # Into checkpoints only: run.py logs the whole config to MLflow itself, and a resume that changes a
        # setting (train.lr) records it as a resume/ tag; Lightning's own logging would change a logged param,
        # which MLflow refuses.
        self.save_hyperparameters(logger=False)
        self.model = ElectraForPretraining(BertConfig(**model_config), generator_size, disc_weight)
        self.register_buffer("special_ids", torch.tensor(special_ids, dtype=torch.long), persistent=False)
        self.metrics = torch.nn.ModuleDict(
            {f"{split}_metrics": torch.nn.ModuleDict({name: torchmetrics.MeanMetric() for name in METRICS})
             for split in SPLITS}
        )

    def forward(self, batch: dict[str, torch.Tensor]):
        return self.model(
            batch["input_ids"], batch.get("token_type_ids"), batch["attention_mask"], batch["mlm_labels"],
            self.special_ids,
        )

    def _shared_step(self, batch: dict[str, torch.Tensor], split: str) -> torch.Tensor:
        out = self(batch)
        metrics = self.metrics[f"{split}_metrics"]
        size = batch["input_ids"].size(0)
        on_step = split == "train"
        scored = out.disc_mask
        with torch.no_grad():
            predicted = out.disc_logits > 0
            labels = out.disc_labels.bool()
            correct = (predicted == labels) & scored
            replaced, original = labels & scored, ~labels & scored
            values = {
                "loss": (out.loss.detach(), 1),
                "disc_loss": (out.disc_loss.detach(), scored.sum()),
                "disc_acc": (correct.sum() / scored.sum().clamp(min=1), scored.sum()),
                "replaced_share": (replaced.sum() / scored.sum().clamp(min=1), scored.sum()),
            }
            if out.mlm_count > 0:
                values["mlm_loss"] = (out.mlm_loss.detach(), out.mlm_count)
                values["mlm_acc"] = (out.mlm_correct / out.mlm_count, out.mlm_count)
            if replaced.any():
                values["disc_acc_replaced"] = ((correct & replaced).sum() / replaced.sum(), replaced.sum())
            if original.any():
                values["disc_acc_original"] = ((correct & original).sum() / original.sum(), original.sum())
        for name, (value, weight) in values.items():
            metrics[name](value, weight=weight)
            self.log(f"{split}/{name}", metrics[name], on_step=on_step, on_epoch=True, batch_size=size,
                     prog_bar=name in ("mlm_loss", "disc_loss"))
        return out.loss

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self._shared_step(batch, "train")
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"training loss is {loss.item()} at global step {self.global_step}: lower train.lr or "
                "model.disc_weight, or use impl.precision=32; resume from the last checkpoint with ckpt_path=<run dir>"
            )
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def configure_optimizers(self):
        return pretraining_optimizers(self, self.model.named_parameters())

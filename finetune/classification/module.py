"""Sentence (pair) classification: the model (plain PyTorch) and its training system.

:class:`BertSequenceClassifier` -- encoder -> a sentence vector -> dropout -> linear.
The sentence vector is the first token ([CLS]), through the pooler when the encoder
was pretrained with NSP (the pooler is what that objective trained; elsewhere it is
untrained), or the mean of the text's token vectors (``pooling="mean"``, as
sentence-transformers do): an MLM-only encoder never trained its [CLS] vector to
summarise the text, while every token vector was trained.

:class:`ClassificationModule` -- AdamW with separate encoder and head learning
rates and the same warmup/decay schedule as NER; optional class weights in the
loss. Validation collects every prediction of the evaluation split and logs
``val/macro_f1`` and ``val/accuracy`` (torchmetrics, one process); the last
evaluation's probabilities stay in :attr:`ClassificationModule.last_evaluation`
for the end-of-run report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
import torchmetrics
from torch import nn

from bert_lm.models.bert import BertConfig, BertModel, init_bert_weights
from finetune.optimization import encoder_head_optimizer

# cls: the first token's vector (through the pooler where NSP trained it); mean: the
# average of the text's token vectors.
POOLING_CHOICES = ("cls", "mean")


class BertSequenceClassifier(nn.Module):
    def __init__(
        self,
        encoder_config: BertConfig,
        labels: Sequence[str],
        use_pooler: bool = False,
        classifier_dropout: float | None = None,
        pooling: str = "cls",
    ):
        super().__init__()
        if pooling not in POOLING_CHOICES:
            raise ValueError(f"pooling={pooling!r}: use one of {POOLING_CHOICES}")
        if use_pooler and pooling != "cls":
            raise ValueError("the pooler reads the [CLS] vector: use_pooler=True needs pooling='cls'")
        self.labels = list(labels)
        self.use_pooler = use_pooler
        self.pooling = pooling
        # Without the pooler it is left out: parameters without gradients upset DDP.
        self.encoder = BertModel(encoder_config, add_pooling_layer=use_pooler)
        dropout = encoder_config.hidden_dropout_prob if classifier_dropout is None else classifier_dropout
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(encoder_config.hidden_size, len(self.labels))
        init_bert_weights(self.classifier, encoder_config.initializer_range)

    @property
    def config(self) -> BertConfig:
        return self.encoder.config

    def load_encoder_weights(self, encoder: BertModel) -> None:
        """Copy a pretrained encoder's weights (its pooler only when this model reads it)."""
        state = encoder.state_dict()
        if not self.use_pooler:
            state = {k: v for k, v in state.items() if not k.startswith("pooler.")}
        self.encoder.load_state_dict(state)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Class logits (B, num_labels) for (B, T) inputs."""
        sequence_output, pooled = self.encoder(input_ids, token_type_ids, attention_mask)
        if self.pooling == "mean":
            features = masked_mean(sequence_output, attention_mask)
        else:
            features = pooled if self.use_pooler else sequence_output[:, 0]  # (B, H)
        return self.classifier(self.dropout(features))


def masked_mean(sequence_output: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of the (B, T, H) token vectors over the positions the (B, T) mask keeps ([CLS], [SEP] included)."""
    mask = attention_mask.unsqueeze(-1).to(sequence_output.dtype)
    return (sequence_output * mask).sum(1) / mask.sum(1).clamp(min=1.0)


@dataclass(frozen=True)
class ClassificationEvaluation:
    """One evaluation: gold and predicted label ids and class probabilities, in row order."""

    gold: list[int]
    pred: list[int]
    probabilities: list[list[float]]


class ClassificationModule(pl.LightningModule):
    def __init__(
        self,
        encoder_config: dict[str, Any],
        labels: list[str],
        use_pooler: bool = False,
        class_weights: list[float] | None = None,
        classifier_dropout: float | None = None,
        pooling: str = "cls",
        encoder_lr: float = 5e-5,
        head_lr: float = 1e-3,
        weight_decay: float = 0.01,
        adam_eps: float = 1e-8,
        betas: tuple[float, float] = (0.9, 0.999),
        scheduler: str = "linear",
        warmup_steps: int | None = None,
        warmup_ratio: float = 0.1,
    ):
        super().__init__()
        # Plain containers only: the checkpoint must load with torch.load(weights_only=True).
        self.save_hyperparameters()
        self.classifier = BertSequenceClassifier(
            BertConfig(**encoder_config), labels, use_pooler, classifier_dropout, pooling
        )
        if class_weights is not None and len(class_weights) != len(labels):
            raise ValueError(f"task.class_weights has {len(class_weights)} values for {len(labels)} labels {labels}")
        self.register_buffer(
            "class_weights", torch.tensor(class_weights, dtype=torch.float) if class_weights else None, persistent=False
        )
        num_classes = len(labels)
        self.train_loss = torchmetrics.MeanMetric()
        self.val_loss = torchmetrics.MeanMetric()
        self.val_accuracy = torchmetrics.classification.MulticlassAccuracy(num_classes, average="micro")
        self.val_macro_f1 = torchmetrics.classification.MulticlassF1Score(num_classes, average="macro")
        self._collected: dict[int, tuple[int, int, list[float]]] = {}
        self.last_evaluation: ClassificationEvaluation | None = None

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.classifier(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), labels, weight=self.class_weights)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.loss(self(batch), batch["labels"])
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"training loss is {loss.item()} at global step {self.global_step}: lower finetune.encoder_lr "
                "or finetune.head_lr, or use impl.precision=32"
            )
        size = batch["input_ids"].size(0)
        self.train_loss(loss.detach(), weight=size)
        self.log("train/loss", self.train_loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=size)
        return loss

    def on_validation_epoch_start(self) -> None:
        self._collected = {}
        if not self.trainer.sanity_checking:
            self.last_evaluation = None  # a validation that scores nothing leaves nothing stale behind

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        logits = self(batch).float()
        labels, size = batch["labels"], batch["input_ids"].size(0)
        self.val_loss(self.loss(logits, labels), weight=size)
        self.log("val/loss", self.val_loss, on_epoch=True, batch_size=size)
        self.val_accuracy(logits, labels)
        self.val_macro_f1(logits, labels)
        self.log("val/accuracy", self.val_accuracy, on_epoch=True, batch_size=size)
        self.log("val/macro_f1", self.val_macro_f1, on_epoch=True, prog_bar=True, batch_size=size)
        probabilities = logits.softmax(-1).tolist()
        for index, gold, pred, probs in zip(
            batch["index"].tolist(), labels.tolist(), logits.argmax(-1).tolist(), probabilities, strict=True
        ):
            self._collected[index] = (gold, pred, probs)

    def on_validation_epoch_end(self) -> None:
        collected, self._collected = self._collected, {}
        if self.trainer.sanity_checking or not collected:
            return
        if self.trainer.world_size > 1:
            raise RuntimeError("classification evaluation gathers predictions in one process: evaluate on one device")
        rows = [collected[i] for i in sorted(collected)]
        self.last_evaluation = ClassificationEvaluation(
            [g for g, _, _ in rows], [p for _, p, _ in rows], [probs for _, _, probs in rows]
        )

    def configure_optimizers(self):
        total_steps = int(self.trainer.estimated_stepping_batches)
        return encoder_head_optimizer(self.classifier.named_parameters(), self.hparams, total_steps)

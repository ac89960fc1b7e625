"""The NER model (plain PyTorch) and its training system (LightningModule).

:class:`BertNerTagger` -- encoder -> dropout -> linear emission scores (B, T, labels)
-> a head:

* ``crf``: a linear-chain CRF (:class:`finetune.ner.crf.CRFTagger`), optionally with
  IOB2-constrained transitions, trained by negative log-likelihood and decoded
  with Viterbi;
* ``softmax``: token-level cross-entropy, argmax decoding.

Both heads read every position inside the attention mask ([CLS] and [SEP] carry
``O``, see :mod:`finetune.ner.alignment`), so the CRF mask is the attention mask.

:class:`NerModule` -- optimisation and evaluation. AdamW with separate learning
rates for the encoder and for the head (emission layer + CRF), no weight decay on
biases, LayerNorm weights and CRF scores, linear warmup then linear decay
(:func:`bert_lm.training.pretraining_module.warmup_schedule`). Validation decodes every
window, merges windows per sentence, turns token tags into character tags and
scores the whole evaluation split at epoch end with
:func:`finetune.ner.metrics.klue_ner_metrics`, logged as ``val/entity_macro_f1``,
``val/char_macro_f1``, ``val/entity_micro_f1`` (and ``val/loss``). The last
evaluation is kept in :attr:`NerModule.last_evaluation` for the end-of-run report.

Evaluation gathers predictions in one process: under multi-device strategies
each rank would score only its share of the split, so :class:`NerModule` refuses
to evaluate with ``world_size > 1``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
import torchmetrics
from torch import nn

from bert_lm.models.bert import BertConfig, BertModel, init_bert_weights
from finetune.ner.crf import CRFTagger
from finetune.ner.data import IGNORE_LABEL, char_tags_from_windows
from finetune.ner.metrics import klue_ner_metrics
from finetune.optimization import encoder_head_optimizer

log = logging.getLogger(__name__)

HEADS = ("crf", "softmax")


class BertNerTagger(nn.Module):
    """BERT encoder + emission layer + CRF or softmax head."""

    def __init__(
        self,
        encoder_config: BertConfig,
        labels: Sequence[str],
        head: str = "crf",
        constrained_transitions: bool = True,
        classifier_dropout: float | None = None,
    ):
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"finetune.head={head!r}: use one of {HEADS}")
        self.labels = list(labels)
        self.head = head
        # No pooler: NER never reads it, and parameters without gradients upset DDP.
        self.encoder = BertModel(encoder_config, add_pooling_layer=False)
        dropout = encoder_config.hidden_dropout_prob if classifier_dropout is None else classifier_dropout
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(encoder_config.hidden_size, len(self.labels))
        init_bert_weights(self.classifier, encoder_config.initializer_range)
        self.crf = (
            CRFTagger(
                len(self.labels),
                constrained_transitions=constrained_transitions,
                labels=self.labels,
                frame_tag="O",  # [CLS] and [SEP] carry O (finetune.ner.alignment)
            )
            if head == "crf"
            else None
        )

    @property
    def config(self) -> BertConfig:
        return self.encoder.config

    def load_encoder_weights(self, encoder: BertModel) -> None:
        """Copy a pretrained encoder's weights (its pooler, if any, is left out)."""
        state = {k: v for k, v in encoder.state_dict().items() if not k.startswith("pooler.")}
        self.encoder.load_state_dict(state)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Emission scores (B, T, num_labels) for (B, T) inputs."""
        sequence_output, _ = self.encoder(input_ids, token_type_ids, attention_mask)  # (B, T, H)
        return self.classifier(self.dropout(sequence_output))

    def loss(self, emissions: torch.Tensor, labels: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """CRF: mean over sequences of -log p(gold path). Softmax: mean cross-entropy over real tokens."""
        if self.crf is not None:
            return self.crf.neg_log_likelihood(emissions, labels, attention_mask)
        labels = labels.masked_fill(attention_mask == 0, IGNORE_LABEL)
        return F.cross_entropy(emissions.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE_LABEL)

    @torch.no_grad()
    def decode(self, emissions: torch.Tensor, attention_mask: torch.Tensor) -> list[list[int]]:
        """Best label ids per sequence, as long as its attention mask (special tokens included)."""
        if self.crf is not None:
            return self.crf.decode(emissions, attention_mask)
        lengths = attention_mask.sum(dim=1).tolist()
        best = emissions.argmax(dim=-1).tolist()  # (B, T)
        return [row[:n] for row, n in zip(best, lengths, strict=True)]


@dataclass(frozen=True)
class NerEvaluation:
    """Scores of one evaluation and what they were computed from (character tags)."""

    metrics: dict  # finetune.ner.metrics.klue_ner_metrics output (report and confusion included)
    ids: list[str]
    texts: list[str]
    gold: list[list[str]]
    pred: list[list[str]]
    skipped: int  # sentences left out because a window of theirs was not evaluated


class NerModule(pl.LightningModule):
    def __init__(
        self,
        encoder_config: dict[str, Any],
        labels: list[str],
        head: str = "crf",
        constrained_transitions: bool = True,
        classifier_dropout: float | None = None,
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
        self.tagger = BertNerTagger(
            BertConfig(**encoder_config), labels, head, constrained_transitions, classifier_dropout
        )
        self.train_loss = torchmetrics.MeanMetric()
        self.val_loss = torchmetrics.MeanMetric()
        self._window_predictions: dict[tuple[int, int], list[int]] = {}
        self.last_evaluation: NerEvaluation | None = None

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.tagger(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.tagger.loss(self(batch), batch["labels"], batch["attention_mask"])
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"training loss is {loss.item()} at global step {self.global_step}: lower finetune.encoder_lr "
                "or finetune.head_lr, or use impl.precision=32"
            )
        self.train_loss(loss.detach(), weight=batch["input_ids"].size(0))
        self.log(
            "train/loss",
            self.train_loss,
            on_step=True,
            on_epoch=True,
            prog_bar=True,
            batch_size=batch["input_ids"].size(0),
        )
        return loss

    def on_validation_epoch_start(self) -> None:
        self._window_predictions = {}
        if not self.trainer.sanity_checking:
            # A validation that scores nothing must not leave an older epoch's result behind.
            self.last_evaluation = None

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        emissions = self(batch)
        mask = batch["attention_mask"]
        if "labels" in batch:
            self.val_loss(self.tagger.loss(emissions, batch["labels"], mask), weight=mask.size(0))
            self.log("val/loss", self.val_loss, on_epoch=True, batch_size=mask.size(0))
        paths = self.tagger.decode(emissions, mask)
        keys = zip(batch["sentence_index"].tolist(), batch["window_index"].tolist(), strict=True)
        for key, path in zip(keys, paths, strict=True):
            self._window_predictions[key] = path[1:-1]  # without [CLS] and [SEP]

    def on_validation_epoch_end(self) -> None:
        predictions, self._window_predictions = self._window_predictions, {}
        if self.trainer.sanity_checking:
            return  # a few batches only: scores over a sliver of the split mean nothing
        if self.trainer.world_size > 1:
            raise RuntimeError("NER evaluation gathers predictions in one process: evaluate on one device")
        datamodule = getattr(self.trainer, "datamodule", None)
        sentences = getattr(datamodule, "eval_sentences", None)
        if not sentences:
            raise RuntimeError(
                "NerModule evaluates against trainer.datamodule.eval_sentences: "
                "pass a finetune.ner.data.KlueNerDataModule to fit/validate"
            )
        evaluation = evaluate_predictions(sentences, predictions, self.hparams.labels)
        if evaluation is None:
            log.warning("no evaluation sentence had all its windows predicted: nothing to score")
            return
        if evaluation.skipped:
            log.warning(
                "%d of %d evaluation sentences left out of the scores (not every window evaluated)",
                evaluation.skipped,
                len(sentences),
            )
        self.last_evaluation = evaluation
        for name in ("entity_macro_f1", "char_macro_f1", "entity_micro_f1"):
            self.log(f"val/{name}", evaluation.metrics[name], prog_bar=name == "entity_macro_f1")

    def configure_optimizers(self):
        total_steps = int(self.trainer.estimated_stepping_batches)
        return encoder_head_optimizer(self.tagger.named_parameters(), self.hparams, total_steps, extra_no_decay=lambda name: name.startswith("crf."))


def evaluate_predictions(sentences, window_predictions, labels: Sequence[str]) -> NerEvaluation | None:
    """Score window predictions against the gold tags of ``sentences``
    (:class:`finetune.ner.data.EncodedSentence`); None when no sentence is complete."""
    char_tags = char_tags_from_windows(sentences, window_predictions, labels)
    complete = [(s, tags) for s, tags in zip(sentences, char_tags, strict=True) if tags is not None]
    if not complete:
        return None
    ids = [s.id for s, _ in complete]
    texts = [s.text for s, _ in complete]
    gold = [s.tags for s, _ in complete]
    pred = [tags for _, tags in complete]
    metrics = klue_ner_metrics(texts, gold, pred, labels)
    return NerEvaluation(metrics, ids, texts, gold, pred, skipped=len(sentences) - len(complete))

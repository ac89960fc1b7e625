"""ELECTRA pretraining (replaced-token detection) in plain PyTorch, named like HF transformers.

A small generator (an encoder with an MLM head, ``generator_size`` of the discriminator's
width, same depth) fills the masked positions by sampling from its output distribution; the
discriminator reads the filled sequence and predicts, for every real token, whether it was
replaced. loss = generator MLM loss + ``disc_weight`` x discriminator loss (50 in the paper).

* Token, position and token-type embeddings (and their LayerNorm) are one module shared by
  both networks (the paper's choice): the generator's MLM gradient trains them too.
* The generator's head runs on the masked positions only, as our MLM head does.
* Sampling is outside the graph (``torch.no_grad``): no gradient reaches the generator
  through the discriminator's loss. A sampled token equal to the original counts as original.
* Special tokens are never sampled, and padding and special positions take no part in the
  discriminator's loss.

The two halves export separately in transformers' layout: the discriminator as
``ElectraForPreTraining`` (``electra.*``, ``discriminator_predictions.*``) and the generator as
``ElectraForMaskedLM`` (``electra.*``, ``generator_predictions.*``, ``generator_lm_head``); see
:mod:`bert_lm.models.hf_interop`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from bert_lm.models.bert import (
    ACTIVATIONS,
    IGNORE_INDEX,
    BertConfig,
    BertForPreTraining,
    BertModel,
    init_bert_weights,
    softmax_cross_entropy,
)


def generator_config(discriminator: BertConfig, generator_size: float) -> BertConfig:
    """The generator's shape: ``generator_size`` of the discriminator's hidden size (1/4 to 1/3 in
    the paper), the same depth and embedding size, heads of the discriminator's head size."""
    if not 0.0 < generator_size <= 1.0:
        raise ValueError(f"model.generator_size={generator_size}: must be in (0, 1] (the paper uses 1/4 to 1/3)")
    head_size = discriminator.head_size
    heads = max(1, round(discriminator.hidden_size * generator_size / head_size))
    return replace(
        discriminator,
        hidden_size=heads * head_size,
        num_attention_heads=heads,
        intermediate_size=max(1, round(discriminator.intermediate_size * generator_size)),
        embedding_size=discriminator.embedding_dim,
    )


class ElectraDiscriminatorPredictions(nn.Module):
    """HF's head: dense (H -> H) -> hidden_act -> dense_prediction (H -> 1)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = ACTIVATIONS[config.hidden_act]
        self.dense_prediction = nn.Linear(config.hidden_size, 1)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.dense_prediction(self.act(self.dense(hidden))).squeeze(-1)  # (..., H) -> (...)


@dataclass
class ElectraOutput:
    loss: torch.Tensor
    mlm_loss: torch.Tensor
    mlm_correct: torch.Tensor  # generator argmax hits among masked positions (no grad)
    mlm_count: torch.Tensor
    disc_loss: torch.Tensor
    disc_logits: torch.Tensor  # (B, T)
    disc_labels: torch.Tensor  # (B, T) float 1 = replaced, 0 = original
    disc_mask: torch.Tensor  # (B, T) bool: positions the discriminator is scored on
    filled_ids: torch.Tensor  # (B, T) the discriminator's input


class ElectraForPretraining(nn.Module):
    """Generator + discriminator with shared embeddings."""

    def __init__(self, config: BertConfig, generator_size: float = 0.25, disc_weight: float = 50.0):
        super().__init__()
        if config.model_type != "electra":
            raise ValueError(f"model.model_type={config.model_type!r}: ELECTRA pretraining needs model_type=electra")
        self.config = config
        self.generator_config = generator_config(config, generator_size)
        self.disc_weight = disc_weight
        self.discriminator = BertModel(config, add_pooling_layer=False)
        self.discriminator_predictions = ElectraDiscriminatorPredictions(config)
        init_bert_weights(self.discriminator_predictions.dense, config.initializer_range)
        init_bert_weights(self.discriminator_predictions.dense_prediction, config.initializer_range)
        # The generator: a BertForPreTraining whose MLM head we use (its NSP head and pooler are
        # dropped so no parameter goes without a gradient), reading the discriminator's embeddings.
        self.generator = BertForPreTraining(self.generator_config)
        self.generator.bert.pooler = None
        del self.generator.cls.seq_relationship
        self.generator.bert.embeddings = self.discriminator.embeddings
        if self.generator_config.tie_word_embeddings:
            self.generator.cls.predictions.decoder.weight = self.discriminator.embeddings.word_embeddings.weight

    def generator_logits(self, input_ids, token_type_ids, attention_mask, positions: torch.Tensor) -> torch.Tensor:
        """(N, V) MLM logits at the masked ``positions`` (a (B, T) bool mask)."""
        sequence_output, _ = self.generator.bert(input_ids, token_type_ids, attention_mask)
        return self.generator.cls.predictions(sequence_output[positions]).float()

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None,
        attention_mask: torch.Tensor,
        mlm_labels: torch.Tensor,
        special_ids: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> ElectraOutput:
        """input_ids (B, T) with [MASK] at masked positions; mlm_labels (B, T): the original id there,
        IGNORE_INDEX elsewhere; special_ids (S,): ids never sampled nor scored by the discriminator."""
        is_masked = mlm_labels != IGNORE_INDEX  # (B, T)
        masked_labels = mlm_labels[is_masked]  # (N,)
        gen_logits = self.generator_logits(input_ids, token_type_ids, attention_mask, is_masked)  # (N, V)
        if masked_labels.numel() > 0:
            mlm_loss = softmax_cross_entropy(gen_logits, masked_labels)
        else:
            mlm_loss = gen_logits.sum() * 0.0
        with torch.no_grad():
            mlm_correct = (gen_logits.argmax(-1) == masked_labels).sum()
            sampling_logits = gen_logits.detach().clone()
            sampling_logits[:, special_ids] = float("-inf")
            sampled = torch.multinomial(sampling_logits.softmax(-1), 1, generator=generator).squeeze(-1)  # (N,)
            # The original sequence, with sampled tokens at the masked positions.
            originals = torch.where(is_masked, mlm_labels, input_ids)  # (B, T)
            filled = originals.clone()
            filled[is_masked] = sampled
            disc_labels = (filled != originals).float()  # a sample equal to the original is original
            disc_mask = attention_mask.bool() & ~torch.isin(originals, special_ids)
        sequence_output, _ = self.discriminator(filled, token_type_ids, attention_mask)
        disc_logits = self.discriminator_predictions(sequence_output).float()  # (B, T)
        disc_loss = F.binary_cross_entropy_with_logits(disc_logits[disc_mask], disc_labels[disc_mask])
        return ElectraOutput(
            loss=mlm_loss + self.disc_weight * disc_loss,
            mlm_loss=mlm_loss,
            mlm_correct=mlm_correct,
            mlm_count=is_masked.sum(),
            disc_loss=disc_loss,
            disc_logits=disc_logits,
            disc_labels=disc_labels,
            disc_mask=disc_mask,
            filled_ids=filled,
        )


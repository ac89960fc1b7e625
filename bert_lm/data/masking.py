"""Batching and MLM masking of pretraining examples (the DataLoader's collate_fn).

Masking happens here, per batch, rather than when examples are made (BERT's original
data was masked once and duplicated ten times): every epoch sees new masks. The
generator is seeded from (seed, epoch, position of the batch's first example), so a
batch's masks do not depend on which worker builds it or on how many workers there are,
and a resumed run redraws exactly the masks it would have drawn.

Selection: each non-special token (or, with whole_word_mask, each word: a piece that
does not start with ## followed by its ## pieces) is chosen independently with
probability mask_ratio, so the expected fraction of masked tokens is mask_ratio either
way (HF's DataCollatorForLanguageModeling draws per token the same way; the original
took exactly round(ratio * length) positions). A chosen token becomes [MASK] with
probability mask_token_prob, a random non-special token with random_token_prob, and stays
as is otherwise; its label is the original id, -100 elsewhere.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from bert_lm.data.pretraining_examples import mix_seed

IGNORE_INDEX = -100


class MlmMasker:
    """Applies BERT's masking to padded batches of token ids."""

    @classmethod
    def for_tokenizer(
        cls,
        tokenizer,
        mask_ratio: float,
        mask_token_prob: float,
        random_token_prob: float,
        whole_word_mask: bool,
    ) -> MlmMasker:
        """The masker of a tokenizer (its special ids, its ``##`` pieces for whole-word masking):
        one construction for training, validation and ``bert_lm.evaluate``, so equal settings
        draw equal masks."""
        return cls(
            tokenizer.vocab_size,
            tokenizer.mask_id,
            tokenizer.special_ids,
            continuation_mask=tokenizer.continuation_mask() if whole_word_mask else None,
            mask_ratio=mask_ratio,
            mask_token_prob=mask_token_prob,
            random_token_prob=random_token_prob,
            whole_word_mask=whole_word_mask,
        )

    def __init__(
        self,
        vocab_size: int,
        mask_id: int,
        special_ids: Sequence[int],
        continuation_mask: np.ndarray | None = None,
        mask_ratio: float = 0.15,
        mask_token_prob: float = 0.8,
        random_token_prob: float = 0.1,
        whole_word_mask: bool = False,
    ):
        if not 0.0 < mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must lie in (0, 1), got {mask_ratio}")
        if mask_token_prob < 0 or random_token_prob < 0 or mask_token_prob + random_token_prob > 1.0:
            raise ValueError("mask_token_prob and random_token_prob must be >= 0 and sum to at most 1")
        if whole_word_mask and continuation_mask is None:
            raise ValueError("whole_word_mask needs the tokenizer's continuation_mask (which ids are ## pieces)")
        self.mask_id = mask_id
        self.mask_ratio = mask_ratio
        self.mask_token_prob = mask_token_prob
        self.random_token_prob = random_token_prob
        self.whole_word_mask = whole_word_mask
        # (vocab_size,) lookup tables, indexed by token id.
        self.is_special = torch.zeros(vocab_size, dtype=torch.bool)
        self.is_special[list(special_ids)] = True
        self.is_continuation = (
            torch.as_tensor(np.asarray(continuation_mask, bool))
            if continuation_mask is not None
            else torch.zeros(vocab_size, dtype=torch.bool)
        )
        if len(self.is_continuation) != vocab_size:
            raise ValueError("continuation_mask must have one entry per vocabulary id")
        # Random replacements are drawn from real tokens only: never [PAD], [CLS], [MASK], ...
        self.replacement_ids = torch.nonzero(~self.is_special).squeeze(1)

    def __call__(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """input_ids, attention_mask: (B, T). Returns (masked input_ids, mlm_labels)."""
        batch, length = input_ids.shape
        candidate = attention_mask.bool() & ~self.is_special[input_ids]  # (B, T)
        if self.whole_word_mask:
            # A ## piece continues the word of the token before it, unless that token is
            # special or padding (a word cut by truncation starts at its first kept piece).
            previous_candidate = torch.zeros_like(candidate)
            previous_candidate[:, 1:] = candidate[:, :-1]
            word_start = candidate & ~(self.is_continuation[input_ids] & previous_candidate)
        else:
            word_start = candidate
        chosen_start = word_start & (torch.rand(batch, length, generator=generator) < self.mask_ratio)
        # Every token follows the decision taken at its word's first piece.
        columns = torch.arange(length).expand(batch, length)
        start_column = torch.cummax(torch.where(word_start, columns, 0), dim=1).values
        chosen = candidate & chosen_start.gather(1, start_column)

        action = torch.rand(batch, length, generator=generator)
        to_mask = chosen & (action < self.mask_token_prob)
        to_random = chosen & (action >= self.mask_token_prob) & (action < self.mask_token_prob + self.random_token_prob)
        random_ids = self.replacement_ids[
            torch.randint(len(self.replacement_ids), (batch, length), generator=generator)
        ]

        masked = torch.where(to_mask, torch.full_like(input_ids, self.mask_id), input_ids)
        masked = torch.where(to_random, random_ids, masked)
        labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
        return masked, labels


class PretrainingCollator:
    """collate_fn: pads examples from PretrainingDataset and masks them.

    Pads to the longest example of the batch (rounded up to pad_to_multiple_of), not to
    max_len. Output, all int64: input_ids, token_type_ids, attention_mask, mlm_labels (B, T);
    nsp_labels (B,) when the examples are NSP pairs (1 = B is random); example_index (B,),
    the example's row in its epoch's plan (for logging and resume checks).
    """

    def __init__(self, masker: MlmMasker, pad_id: int, seed: int, pad_to_multiple_of: int | None = None):
        self.masker = masker
        self.pad_id = pad_id
        self.seed = seed
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        batch = len(examples)
        length = max(len(example["input_ids"]) for example in examples)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        input_ids = np.full((batch, length), self.pad_id, np.int64)
        token_type_ids = np.zeros((batch, length), np.int64)
        attention_mask = np.zeros((batch, length), np.int64)
        for row, example in enumerate(examples):
            n = len(example["input_ids"])
            input_ids[row, :n] = example["input_ids"]
            token_type_ids[row, example["num_a_tokens"] : n] = 1
            attention_mask[row, :n] = 1
        input_ids, attention_mask = torch.from_numpy(input_ids), torch.from_numpy(attention_mask)

        first = examples[0]
        generator = torch.Generator().manual_seed(mix_seed(self.seed, first["epoch"], first["position"]) >> 1)
        masked_ids, mlm_labels = self.masker(input_ids, attention_mask, generator)
        out = {
            "input_ids": masked_ids,
            "token_type_ids": torch.from_numpy(token_type_ids),
            "attention_mask": attention_mask,
            "mlm_labels": mlm_labels,
            "example_index": torch.tensor([example["example_index"] for example in examples]),
        }
        if "is_random_next" in first:
            out["nsp_labels"] = torch.tensor([int(example["is_random_next"]) for example in examples])
        return out

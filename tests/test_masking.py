"""MLM masking statistics, whole-word masking, reproducibility and padding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bert_lm.data.masking import IGNORE_INDEX, MlmMasker, PretrainingCollator

VOCAB = 500
PAD, UNK, CLS, SEP, MASK, EOD = range(6)
SPECIAL = [PAD, UNK, CLS, SEP, MASK, EOD]
CONTINUATION = np.zeros(VOCAB, bool)
CONTINUATION[300:] = True  # ids 300.. are "##" pieces


def random_batch(generator: torch.Generator, batch: int = 64, length: int = 128):
    """Sequences of word pieces between [CLS] and [SEP], right-padded, with some [UNK]s."""
    lengths = torch.randint(8, length + 1, (batch,), generator=generator)
    ids = torch.randint(6, VOCAB, (batch, length), generator=generator)
    ids[torch.rand(batch, length, generator=generator) < 0.02] = UNK
    positions = torch.arange(length).expand(batch, length)
    attention = (positions < lengths[:, None]).long()
    ids[:, 0] = CLS
    ids[positions == (lengths[:, None] - 1)] = SEP
    ids[attention == 0] = PAD
    return ids, attention


def test_selection_and_replacement_rates():
    masker = MlmMasker(VOCAB, MASK, SPECIAL)
    data_generator, mask_generator = torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)
    chosen = candidates = as_mask = as_random = kept = 0
    for _ in range(40):
        ids, attention = random_batch(data_generator)
        masked, labels = masker(ids, attention, mask_generator)
        selected = labels != IGNORE_INDEX
        is_candidate = (attention == 1) & ~torch.isin(ids, torch.tensor(SPECIAL))
        assert not (selected & ~is_candidate).any()  # never a special token or padding
        assert torch.equal(labels[selected], ids[selected])
        assert torch.equal(masked[~selected], ids[~selected])  # unselected tokens untouched
        replaced = selected & (masked != MASK) & (masked != ids)
        assert not torch.isin(masked[replaced], torch.tensor(SPECIAL)).any()  # replacements are real tokens
        chosen += int(selected.sum())
        candidates += int(is_candidate.sum())
        as_mask += int((selected & (masked == MASK)).sum())
        as_random += int(replaced.sum())
        kept += int((selected & (masked == ids)).sum())
    assert abs(chosen / candidates - 0.15) < 0.005
    # A random replacement equal to the original (1 in 494) counts as kept: tolerances allow it.
    assert abs(as_mask / chosen - 0.8) < 0.01
    assert abs(as_random / chosen - 0.1) < 0.01
    assert abs(kept / chosen - 0.1) < 0.01


def test_configurable_split():
    masker = MlmMasker(VOCAB, MASK, SPECIAL, mask_ratio=0.3, mask_token_prob=0.5, random_token_prob=0.5)
    ids, attention = random_batch(torch.Generator().manual_seed(0), batch=256)
    masked, labels = masker(ids, attention, torch.Generator().manual_seed(2))
    selected = labels != IGNORE_INDEX
    assert abs(selected.sum() / ((attention == 1) & ~torch.isin(ids, torch.tensor(SPECIAL))).sum() - 0.3) < 0.02
    assert abs((masked[selected] == MASK).float().mean() - 0.5) < 0.03
    assert (masked[selected] == ids[selected]).float().mean() < 0.01  # nothing kept on purpose


def test_whole_word_masking_takes_words_whole():
    masker = MlmMasker(VOCAB, MASK, SPECIAL, continuation_mask=CONTINUATION, whole_word_mask=True)
    data_generator, mask_generator = torch.Generator().manual_seed(3), torch.Generator().manual_seed(4)
    chosen = candidates = 0
    for _ in range(20):
        ids, attention = random_batch(data_generator)
        _, labels = masker(ids, attention, mask_generator)
        selected = (labels != IGNORE_INDEX).numpy()
        ids_np, attention_np = ids.numpy(), attention.numpy()
        for row in range(len(ids_np)):
            word = []
            for position in range(int(attention_np[row].sum())):
                token = ids_np[row, position]
                if token in SPECIAL:
                    assert not selected[row, position]
                    word = []  # a ## piece after a special token starts its own word
                    continue
                if word and CONTINUATION[token]:
                    # A ## piece follows the decision of its word's first piece.
                    assert selected[row, position] == selected[row, word[0]]
                else:
                    word = [position]
        chosen += int(selected.sum())
        candidates += int(((attention == 1) & ~torch.isin(ids, torch.tensor(SPECIAL))).sum())
    assert abs(chosen / candidates - 0.15) < 0.01  # per-word choice keeps the token rate


def test_same_generator_seed_same_masks():
    masker = MlmMasker(VOCAB, MASK, SPECIAL)
    ids, attention = random_batch(torch.Generator().manual_seed(0))
    first = masker(ids, attention, torch.Generator().manual_seed(5))
    again = masker(ids, attention, torch.Generator().manual_seed(5))
    other = masker(ids, attention, torch.Generator().manual_seed(6))
    assert all(torch.equal(x, y) for x, y in zip(first, again, strict=True))
    assert not torch.equal(first[1], other[1])


def test_invalid_settings():
    with pytest.raises(ValueError, match="mask_ratio"):
        MlmMasker(VOCAB, MASK, SPECIAL, mask_ratio=0.0)
    with pytest.raises(ValueError, match="sum to at most 1"):
        MlmMasker(VOCAB, MASK, SPECIAL, mask_token_prob=0.8, random_token_prob=0.3)
    with pytest.raises(ValueError, match="continuation_mask"):
        MlmMasker(VOCAB, MASK, SPECIAL, whole_word_mask=True)


def make_example(n_a: int, n_b: int, position: int, epoch: int = 0, label: int | None = 0) -> dict:
    ids = np.concatenate([[CLS], np.arange(n_a) + 10, [SEP], np.arange(n_b) + 100, [SEP] if n_b else []])
    example = {
        "input_ids": ids.astype(np.int32),
        "num_a_tokens": n_a + 2,
        "example_index": position,
        "epoch": epoch,
        "position": position,
    }
    if label is not None:
        example["is_random_next"] = label
    return example


def test_collator_pads_to_the_longest_and_builds_segments():
    collate = PretrainingCollator(MlmMasker(VOCAB, MASK, SPECIAL), PAD, seed=0, pad_to_multiple_of=8)
    batch = collate([make_example(3, 4, 0, label=1), make_example(5, 10, 1)])
    assert batch["input_ids"].shape == (2, 24)  # longest is 18, rounded up to a multiple of 8
    assert batch["attention_mask"].sum(1).tolist() == [10, 18]
    assert batch["token_type_ids"][1].tolist() == [0] * 7 + [1] * 11 + [0] * 6
    assert batch["nsp_labels"].tolist() == [1, 0] and batch["example_index"].tolist() == [0, 1]
    assert (batch["mlm_labels"][batch["attention_mask"] == 0] == IGNORE_INDEX).all()
    assert all(v.dtype == torch.int64 for v in batch.values())
    unpadded = PretrainingCollator(MlmMasker(VOCAB, MASK, SPECIAL), PAD, seed=0)([make_example(3, 4, 0)])
    assert unpadded["input_ids"].shape == (1, 10)
    spans = collate([make_example(6, 0, 0, label=None)])
    assert "nsp_labels" not in spans and spans["token_type_ids"].sum() == 0


def test_collator_masks_depend_on_epoch_and_position_only():
    collate = PretrainingCollator(MlmMasker(VOCAB, MASK, SPECIAL, mask_ratio=0.5), PAD, seed=0)
    examples = [make_example(40, 40, 7), make_example(30, 20, 8)]
    assert torch.equal(collate(examples)["input_ids"], collate(examples)["input_ids"])
    next_epoch = [dict(e, epoch=1) for e in examples]
    assert not torch.equal(collate(examples)["input_ids"], collate(next_epoch)["input_ids"])

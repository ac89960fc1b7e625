"""NER windows, batches and the way back to character tags."""

from __future__ import annotations

import pytest
import torch

from finetune.ner.alignment import token_predictions_to_char_tags
from finetune.ner.data import (
    IGNORE_LABEL,
    KlueNerDataModule,
    LengthGroupedBatchSampler,
    NerCollator,
    NerWindowDataset,
    char_tags_from_windows,
    check_labels,
    encode_sentences,
    window_size,
)
from finetune.ner.klue_ner import KLUE_NER_LABELS, entity_spans, read_klue_ner
from tests.conftest import REPO_ROOT

SAMPLE_DIR = REPO_ROOT / "finetune" / "sample"
TRAIN_FILE = SAMPLE_DIR / "klue-ner-sample-train.tsv"
DEV_FILE = SAMPLE_DIR / "klue-ner-sample-dev.tsv"
LABEL2ID = {label: i for i, label in enumerate(KLUE_NER_LABELS)}


@pytest.fixture(scope="module")
def sample_sentences():
    return read_klue_ner(TRAIN_FILE)


@pytest.fixture(scope="module")
def long_sentences(sample_sentences):
    """Sentences of 5-6 sample sentences each: many windows at a short max_len."""
    joined = []
    for start in range(0, 30, 6):
        group = sample_sentences[start : start + 6]
        text = " ".join(s.text for s in group)
        tags = []
        for i, sentence in enumerate(group):
            tags += (["O"] if i else []) + sentence.tags
        joined.append((text, tags))
    return joined


def encoded(tokenizer, sentences, max_len=16, stride=None):
    return encode_sentences([t for t, _ in sentences], [g for _, g in sentences], tokenizer, max_len, stride)


def test_windows_cover_every_character(mecab_tokenizer, long_sentences):
    for sentence in encoded(mecab_tokenizer, long_sentences, max_len=16):
        assert len(sentence.windows) > 1
        assert all(end - start <= 14 for start, end in sentence.windows)
        covered = set()
        for start, end in sentence.windows:
            for token_start, token_end in sentence.encoding.offsets[start:end]:
                covered.update(range(token_start, token_end))
        missing = [i for i, char in enumerate(sentence.text) if not char.isspace() and i not in covered]
        assert not missing, f"characters {missing} are in no window"


@pytest.mark.parametrize("stride", [None, 5, 12])
def test_gold_windows_merge_back_to_the_aligned_character_tags(mecab_tokenizer, long_sentences, stride):
    """Predicting each window's gold labels and merging gives, per character, what
    the tokens can represent of the gold tags (the alignment round trip). Needs
    overlapping windows (stride < max_len - 2): without overlap an entity across a
    window edge is cut in two, its second half relabelled B-X by the window."""
    sentences = encoded(mecab_tokenizer, long_sentences, max_len=16, stride=stride)
    dataset = NerWindowDataset(sentences, cls_id=2, sep_id=3, label2id=LABEL2ID)
    predictions = {(e["sentence_index"], e["window_index"]): e["labels"][1:-1] for e in dataset}
    merged = char_tags_from_windows(sentences, predictions, KLUE_NER_LABELS)
    for sentence, char_tags in zip(sentences, merged, strict=True):
        expected = token_predictions_to_char_tags(sentence.text, sentence.encoding, sentence.token_tags)
        assert len(char_tags) == len(sentence.text)
        assert entity_spans(char_tags) == entity_spans(expected)


def test_missing_window_leaves_the_sentence_out(mecab_tokenizer, long_sentences):
    sentences = encoded(mecab_tokenizer, long_sentences[:2])
    dataset = NerWindowDataset(sentences, cls_id=2, sep_id=3, label2id=LABEL2ID)
    predictions = {(e["sentence_index"], e["window_index"]): e["labels"][1:-1] for e in dataset}
    del predictions[(1, 0)]
    merged = char_tags_from_windows(sentences, predictions, KLUE_NER_LABELS)
    assert merged[0] is not None and merged[1] is None


def test_dataset_examples_are_cls_window_sep_with_o_labels(mecab_tokenizer, long_sentences):
    sentences = encoded(mecab_tokenizer, long_sentences, max_len=16)
    dataset = NerWindowDataset(sentences, cls_id=2, sep_id=3, label2id=LABEL2ID)
    assert len(dataset) == sum(len(s.windows) for s in sentences)
    for example in dataset:
        sentence = sentences[example["sentence_index"]]
        start, end = sentence.windows[example["window_index"]]
        assert example["input_ids"] == [2, *sentence.encoding.ids[start:end], 3]
        assert len(example["labels"]) == len(example["input_ids"])
        assert example["labels"][0] == example["labels"][-1] == LABEL2ID["O"]
        first = KLUE_NER_LABELS[example["labels"][1]]
        assert not first.startswith("I-"), "a window starting inside an entity starts it with B-"


def test_collator_pads_right_with_contiguous_mask():
    examples = [
        {"input_ids": [2, 10, 11, 3], "labels": [12, 6, 7, 12], "sentence_index": 0, "window_index": 0},
        {"input_ids": [2, 3], "labels": [12, 12], "sentence_index": 1, "window_index": 0},
        {"input_ids": [2, 20, 21, 22, 23, 3], "labels": [12, 0, 1, 1, 12, 12], "sentence_index": 1, "window_index": 1},
    ]
    batch = NerCollator(pad_id=0)(examples)
    assert batch["input_ids"].shape == batch["attention_mask"].shape == batch["labels"].shape == (3, 6)
    mask = batch["attention_mask"].bool()
    assert mask[:, 0].all()
    assert not (mask[:, 1:] & ~mask[:, :-1]).any(), "no 0 -> 1 step: padding only on the right"
    assert mask.sum(dim=1).tolist() == [4, 2, 6]
    assert batch["input_ids"][1].tolist() == [2, 3, 0, 0, 0, 0]
    assert batch["labels"][1].tolist() == [12, 12] + [IGNORE_LABEL] * 4
    assert (batch["token_type_ids"] == 0).all()
    assert batch["sentence_index"].tolist() == [0, 1, 1] and batch["window_index"].tolist() == [0, 0, 1]
    assert NerCollator(pad_id=0, pad_to_multiple_of=8)(examples)["input_ids"].shape == (3, 8)


def test_collator_without_labels_for_prediction():
    batch = NerCollator(pad_id=0)([{"input_ids": [2, 5, 3], "labels": None, "sentence_index": 0, "window_index": 0}])
    assert "labels" not in batch and batch["attention_mask"].tolist() == [[1, 1, 1]]


def test_datamodule_on_the_bundled_sample(tmp_path, mecab_tokenizer):
    tokenizer_dir = mecab_tokenizer.save(tmp_path / "tokenizer")
    datamodule = KlueNerDataModule(
        TRAIN_FILE, DEV_FILE, tokenizer_dir, KLUE_NER_LABELS, max_len=32, batch_size=8, eval_batch_size=16
    )
    datamodule.setup("fit")
    assert len(datamodule.train_sentences) == 150 and len(datamodule.eval_sentences) == 40
    assert datamodule.eval_sentences[0].id.startswith("klue-ner-sample_dev_")
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["input_ids"].shape[0] == 8 and batch["input_ids"].shape[1] <= 32
    assert (batch["input_ids"][:, 0] == mecab_tokenizer.cls_id).all()
    eval_windows = sum(b["input_ids"].shape[0] for b in datamodule.val_dataloader())
    assert eval_windows == sum(len(s.windows) for s in datamodule.eval_sentences)
    lengths = [b["attention_mask"].sum(dim=1) for b in datamodule.val_dataloader()]
    assert torch.cat(lengths).tolist() == sorted(torch.cat(lengths).tolist()), "evaluation sorted by length"


def test_length_grouped_batches_cover_every_example_once_with_less_padding():
    generator = torch.Generator().manual_seed(0)
    lengths = torch.randint(5, 100, (1000,), generator=generator).tolist()
    sampler = LengthGroupedBatchSampler(lengths, batch_size=32, group_batches=10, seed=1)
    first, second = list(sampler), list(sampler)
    assert len(first) == len(sampler) == 32
    assert sorted(i for batch in first for i in batch) == list(range(1000))
    assert sum(len(batch) < 32 for batch in first) == 1
    assert first != second, "each epoch is a new order"
    assert list(LengthGroupedBatchSampler(lengths, 32, 10, seed=1)) == first, "same seed, same order"
    padded = sum(len(batch) * max(lengths[i] for i in batch) for batch in first)
    random_padded = sum(32 * max(lengths[i] for i in range(s, min(s + 32, 1000))) for s in range(0, 1000, 32))
    assert padded < 0.7 * random_padded


def test_bad_labels_and_lengths_are_refused():
    with pytest.raises(ValueError, match="lacks 'O'"):
        check_labels(["B-PS", "I-PS"])
    with pytest.raises(ValueError, match="no I- counterpart"):
        check_labels(["B-PS", "O"])
    with pytest.raises(ValueError, match="neither"):
        check_labels(["PS", "O"])
    with pytest.raises(ValueError, match="task.max_len"):
        window_size(2, None)
    with pytest.raises(ValueError, match="task.stride"):
        window_size(16, 15)
    with pytest.raises(ValueError, match="so that windows overlap"):
        window_size(16, 14)  # no overlap: entities across a window edge would be cut
    assert window_size(16, None) == (14, 7)

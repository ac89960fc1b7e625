"""KLUE NER for the model: sentences -> token windows -> padded batches, and back.

Forward (:func:`encode_sentences`, :class:`NerWindowDataset`, :class:`NerCollator`)
    Each sentence is tokenized once with the pretraining tokenizer; its character
    tags become one tag per token through the tokenizer's character offsets
    (:func:`finetune.ner.alignment.char_tags_to_token_tags`: *every* token is labelled,
    so the CRF mask equals the attention mask). A sentence longer than
    ``max_len - 2`` tokens is cut into overlapping windows
    (:func:`finetune.ner.alignment.make_windows`); each window is one example
    ``[CLS] tokens [SEP]`` with labels ``O tags O``, and remembers
    ``(sentence_index, window_index)``. Nothing is truncated: every character is
    in some window. Batches are padded on the right, so the attention mask of a
    row is on at position 0 ([CLS]) and contiguous, as the CRF requires.

Back (:func:`char_tags_from_windows`)
    Per-window predictions (special tokens stripped) are merged per sentence --
    each token keeps the prediction of the window in which it is most central --
    and turned into one tag per character of the sentence, which is what the
    KLUE metrics score.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from bert_lm.tokenizer.korean_tokenizer import KoreanTokenizer, TokenizedText
from bert_lm.tokenizer.loading import load_tokenizer
from finetune.ner.alignment import (
    char_tags_to_token_tags,
    make_windows,
    merge_window_predictions,
    token_predictions_to_char_tags,
    window_example,
)
from finetune.ner.klue_ner import NerSentence, read_klue_ner

log = logging.getLogger(__name__)

# Label of padding positions: ignored by cross-entropy, masked out of the CRF.
IGNORE_LABEL = -100


@dataclass(frozen=True)
class EncodedSentence:
    """A sentence with its tokens, their tags (None without gold) and its windows."""

    id: str
    text: str
    tags: list[str] | None  # gold per-character tags
    encoding: TokenizedText  # ids and character offsets into text, no special tokens
    token_tags: list[str] | None  # gold per-token tags
    windows: list[tuple[int, int]]  # token spans, each at most max_len - 2 long


def check_labels(labels: Sequence[str]) -> None:
    """A BIO label list: ``O`` plus ``B-X``/``I-X`` pairs, no duplicates."""
    if "O" not in labels:
        raise ValueError(f"task.labels={list(labels)} lacks 'O'")
    if len(set(labels)) != len(labels):
        raise ValueError(f"task.labels has duplicates: {list(labels)}")
    for label in labels:
        if label != "O" and not (label[:2] in ("B-", "I-") and len(label) > 2):
            raise ValueError(f"task.labels: {label!r} is neither 'O' nor 'B-X'/'I-X'")
        if label != "O" and f"{'I' if label[0] == 'B' else 'B'}-{label[2:]}" not in labels:
            raise ValueError(f"task.labels: {label!r} has no {'I' if label[0] == 'B' else 'B'}- counterpart")


def window_size(max_len: int, stride: int | None) -> tuple[int, int]:
    """(tokens per window, step between window starts) for a model length ``max_len``;
    ``stride=None`` means half a window (each token then sits well inside some window)."""
    if max_len < 3:
        raise ValueError(f"task.max_len={max_len}: needs room for [CLS], [SEP] and at least one token")
    max_tokens = max_len - 2
    stride = stride if stride is not None else max(1, max_tokens // 2)
    # Windows must overlap: a window's first token follows [CLS], where the
    # constrained CRF cannot continue an entity, so without an overlap every
    # entity across a window edge would be cut in two.
    if not 1 <= stride <= max_tokens - 1:
        raise ValueError(
            f"task.stride={stride}: must be in [1, task.max_len - 3 = {max_tokens - 1}] so that windows overlap"
        )
    return max_tokens, stride


def encode_sentences(
    texts: Sequence[str],
    tags: Sequence[Sequence[str]] | None,
    tokenizer: KoreanTokenizer,
    max_len: int,
    stride: int | None = None,
    ids: Sequence[str] | None = None,
) -> list[EncodedSentence]:
    """Tokenize, align gold tags (when given) and cut into windows; ``ids`` default
    to the sentence numbers."""
    max_tokens, stride = window_size(max_len, stride)
    encodings = tokenizer.encode_batch(list(texts))
    sentences = []
    for i, (text, encoding) in enumerate(zip(texts, encodings, strict=True)):
        gold = list(tags[i]) if tags is not None else None
        token_tags = char_tags_to_token_tags(text, gold, encoding) if gold is not None else None
        windows = make_windows(len(encoding.ids), max_tokens, stride)
        sentence_id = ids[i] if ids is not None else str(i)
        sentences.append(EncodedSentence(sentence_id, text, gold, encoding, token_tags, windows))
    return sentences


class NerWindowDataset(Dataset):
    """One example per window: ``input_ids`` ([CLS] ... [SEP]), ``labels`` (ids, or
    None without gold), ``sentence_index``, ``window_index``."""

    def __init__(
        self,
        sentences: Sequence[EncodedSentence],
        *,
        cls_id: int,
        sep_id: int,
        label2id: Mapping[str, int],
        sort_by_length: bool = False,
    ):
        self.examples = []
        for s, sentence in enumerate(sentences):
            for w, window in enumerate(sentence.windows):
                input_ids, labels = window_example(
                    sentence.encoding.ids, sentence.token_tags, window, cls_id=cls_id, sep_id=sep_id, label2id=label2id
                )
                self.examples.append({"input_ids": input_ids, "labels": labels, "sentence_index": s, "window_index": w})
        if sort_by_length:
            # Evaluation only: similar lengths in a batch means little padding; the
            # (sentence, window) keys put predictions back in place.
            self.examples.sort(key=lambda example: len(example["input_ids"]))

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict:
        return self.examples[index]


class LengthGroupedBatchSampler(Sampler[list[int]]):
    """Shuffled training batches of examples of similar length (less padding).

    Each pass shuffles the examples, cuts the order into groups of
    ``group_batches * batch_size``, sorts each group by length, batches it and
    shuffles the batches. The generator is seeded once and advances, so every
    epoch is a different order and a rerun with the same seed is the same. Only
    the last batch can be short: ``len()`` is ``ceil(n / batch_size)``.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, group_batches: int = 50, seed: int = 0):
        if batch_size < 1 or group_batches < 1:
            raise ValueError(f"batch_size={batch_size} and group_batches={group_batches} must be >= 1")
        self.lengths = list(lengths)
        self.batch_size, self.group_size = batch_size, batch_size * group_batches
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return -(-len(self.lengths) // self.batch_size)

    def __iter__(self):
        order = torch.randperm(len(self.lengths), generator=self.generator).tolist()
        batches = []
        for start in range(0, len(order), self.group_size):
            group = sorted(order[start : start + self.group_size], key=self.lengths.__getitem__)
            batches += [group[i : i + self.batch_size] for i in range(0, len(group), self.batch_size)]
        for b in torch.randperm(len(batches), generator=self.generator).tolist():
            yield batches[b]


class NerCollator:
    """Pad on the right: ``input_ids`` with ``pad_id``, ``labels`` with -100;
    ``attention_mask`` 1 on real tokens; all (B, T) long tensors, plus
    ``sentence_index`` and ``window_index`` (B,)."""

    def __init__(self, pad_id: int, pad_to_multiple_of: int | None = None):
        self.pad_id = pad_id
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, examples: Sequence[dict]) -> dict[str, torch.Tensor]:
        length = max(len(e["input_ids"]) for e in examples)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        batch_size = len(examples)
        input_ids = torch.full((batch_size, length), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((batch_size, length), dtype=torch.long)
        has_labels = examples[0]["labels"] is not None
        labels = torch.full((batch_size, length), IGNORE_LABEL, dtype=torch.long)
        for row, example in enumerate(examples):
            n = len(example["input_ids"])
            input_ids[row, :n] = torch.tensor(example["input_ids"])
            attention_mask[row, :n] = 1
            if has_labels:
                labels[row, :n] = torch.tensor(example["labels"])
        batch = {
            "input_ids": input_ids,
            "token_type_ids": torch.zeros_like(input_ids),
            "attention_mask": attention_mask,
            "sentence_index": torch.tensor([e["sentence_index"] for e in examples]),
            "window_index": torch.tensor([e["window_index"] for e in examples]),
        }
        if has_labels:
            batch["labels"] = labels
        return batch


def char_tags_from_windows(
    sentences: Sequence[EncodedSentence],
    window_predictions: Mapping[tuple[int, int], Sequence[int]],
    labels: Sequence[str],
) -> list[list[str] | None]:
    """Per-character tags of every sentence from ``{(sentence, window): label ids of
    the window's tokens}`` ([CLS]/[SEP] stripped). A sentence with a window missing
    (a partial evaluation, ``limit_val_batches``) gets None."""
    char_tags: list[list[str] | None] = []
    for s, sentence in enumerate(sentences):
        keys = [(s, w) for w in range(len(sentence.windows))]
        if not all(key in window_predictions for key in keys):
            char_tags.append(None)
            continue
        per_window = [[labels[i] for i in window_predictions[key]] for key in keys]
        token_tags = merge_window_predictions(len(sentence.encoding.ids), sentence.windows, per_window)
        char_tags.append(token_predictions_to_char_tags(sentence.text, sentence.encoding, token_tags))
    return char_tags


class KlueNerDataModule(pl.LightningDataModule):
    """Train and evaluation splits of KLUE NER TSV files as window batches.

    The files are resolved (found locally or downloaded) before this module is
    built (:func:`finetune.ner.run.resolve_task_files`); ``setup`` reads and
    tokenizes them, which takes seconds for KLUE's sizes, so nothing is cached.
    With ``group_by_length`` training batches hold windows of similar length
    (:class:`LengthGroupedBatchSampler`): KLUE sentences average ~40 tokens, and
    a random batch pads to its longest, about twice that.
    """

    def __init__(
        self,
        train_file: str | os.PathLike,
        eval_file: str | os.PathLike,
        tokenizer_dir: str | os.PathLike,
        labels: Sequence[str],
        max_len: int = 128,
        stride: int | None = None,
        batch_size: int = 32,
        eval_batch_size: int = 64,
        num_workers: int = 0,
        pin_memory: bool = False,
        pad_to_multiple_of: int | None = None,
        group_by_length: bool = True,
        seed: int = 0,
    ):
        super().__init__()
        check_labels(labels)
        window_size(max_len, stride)  # fail now on a bad length or stride
        self.train_file, self.eval_file = Path(train_file), Path(eval_file)
        self.tokenizer_dir = Path(tokenizer_dir)
        self.labels = list(labels)
        self.label2id = {label: i for i, label in enumerate(self.labels)}
        self.max_len, self.stride = max_len, stride
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.pad_to_multiple_of = pad_to_multiple_of
        self.group_by_length, self.seed = group_by_length, seed
        self.train_sentences: list[EncodedSentence] = []
        self.eval_sentences: list[EncodedSentence] = []
        self._tokenizer_ids: tuple[int, int, int] | None = None

    def _encode_file(self, path: Path, tokenizer: KoreanTokenizer) -> list[EncodedSentence]:
        sentences: list[NerSentence] = read_klue_ner(path, self.labels)
        if not sentences:
            raise ValueError(f"{path} holds no sentences")
        return encode_sentences(
            [s.text for s in sentences],
            [s.tags for s in sentences],
            tokenizer,
            self.max_len,
            self.stride,
            ids=[s.id for s in sentences],
        )

    def setup(self, stage: str | None = None) -> None:
        need_train = stage in (None, "fit") and not self.train_sentences
        if not need_train and self.eval_sentences:
            return  # already encoded (fit, then the final validate)
        tokenizer = load_tokenizer(self.tokenizer_dir)
        self._tokenizer_ids = (tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id)
        if need_train:
            self.train_sentences = self._encode_file(self.train_file, tokenizer)
        if not self.eval_sentences:
            self.eval_sentences = self._encode_file(self.eval_file, tokenizer)
        tokenizer.close()
        for name, sentences in (("train", self.train_sentences), ("eval", self.eval_sentences)):
            if sentences:
                windows = sum(len(s.windows) for s in sentences)
                log.info("%s: %d sentences, %d windows of <= %d tokens", name, len(sentences), windows, self.max_len)

    def _loader(self, sentences: Sequence[EncodedSentence], batch_size: int, train: bool) -> DataLoader:
        cls_id, sep_id, pad_id = self._tokenizer_ids
        dataset = NerWindowDataset(
            sentences, cls_id=cls_id, sep_id=sep_id, label2id=self.label2id, sort_by_length=not train
        )
        common = dict(
            collate_fn=NerCollator(pad_id, self.pad_to_multiple_of),
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )
        if train and self.group_by_length:
            lengths = [len(example["input_ids"]) for example in dataset.examples]
            sampler = LengthGroupedBatchSampler(lengths, batch_size, seed=self.seed)
            return DataLoader(dataset, batch_sampler=sampler, **common)
        return DataLoader(dataset, batch_size=batch_size, shuffle=train, **common)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_sentences, self.batch_size, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.eval_sentences, self.eval_batch_size, train=False)

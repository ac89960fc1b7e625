"""Labelled sentences and sentence pairs: readers, label order, encoding and batches.

One reader for the formats labelled sets come in, told apart by extension or
``task.format``:

* ``tsv`` / ``csv``: a header row names the columns (Korean HateSpeech:
  ``comments contain_gender_bias bias hate``; NSMC: ``id document label``);
* ``jsonl``: one JSON object per line;
* ``json``: one JSON array of objects (KLUE NLI: ``premise hypothesis gold_label``).

Every bad row is reported with its file and line (the line of the JSON array
element is not known: its index is given instead) and what to do.

Labels: ``task.labels`` when set (its order fixes the label ids), else the labels
found in the training file, sorted. The order is saved with the model, and an
evaluation row whose label is not among them is an error naming the row.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

log = logging.getLogger(__name__)

FORMATS = ("tsv", "csv", "jsonl", "json")
_FORMAT_BY_SUFFIX = {".tsv": "tsv", ".txt": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".json": "json"}


class ClassificationFormatError(ValueError):
    """A labelled file that cannot be read as configured; the message names file and row."""


@dataclass(frozen=True)
class LabelledText:
    text: str
    text_pair: str | None
    label: str | None  # None when the file has no label column (prediction input)
    row: str  # "file:line" (or "file:[index]" in a JSON array), for messages and provenance


def resolve_format(path: Path, file_format: str | None) -> str:
    if file_format and file_format != "auto":
        if file_format not in FORMATS:
            raise ClassificationFormatError(f"task.format={file_format!r}: use one of {FORMATS} or auto")
        return file_format
    try:
        return _FORMAT_BY_SUFFIX[path.suffix.lower()]
    except KeyError:
        raise ClassificationFormatError(
            f"{path}: cannot tell the format from the extension {path.suffix!r}; set task.format to one of {FORMATS}"
        ) from None


def _records(path: Path, file_format: str) -> Iterator[tuple[str, dict]]:
    """(row id, record) pairs; records map column names to strings."""
    if file_format in ("tsv", "csv"):
        with open(path, encoding="utf-8", newline="") as handle:
            # QUOTE_NONE for TSV: comments hold bare quotes (") that csv would treat as field quoting.
            quoting = csv.QUOTE_NONE if file_format == "tsv" else csv.QUOTE_MINIMAL
            reader = csv.DictReader(handle, delimiter="\t" if file_format == "tsv" else ",", quoting=quoting)
            try:
                for record in reader:
                    yield f"{path}:{reader.line_num}", record
            except UnicodeDecodeError as err:
                raise ClassificationFormatError(
                    f"{path}:{reader.line_num + 1}: not UTF-8 ({err.reason}); re-encode the file as UTF-8"
                ) from None
        return
    if file_format == "jsonl":
        with open(path, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                if not raw.strip():
                    continue
                try:
                    record = json.loads(raw.decode("utf-8"))
                except UnicodeDecodeError as err:
                    raise ClassificationFormatError(f"{path}:{number}: not UTF-8 ({err.reason})") from None
                except json.JSONDecodeError as err:
                    raise ClassificationFormatError(
                        f"{path}:{number}: malformed JSON ({err.msg}); each line must hold one JSON object"
                    ) from None
                if not isinstance(record, dict):
                    raise ClassificationFormatError(f"{path}:{number}: a JSON {type(record).__name__}, not an object")
                yield f"{path}:{number}", record
        return
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise ClassificationFormatError(f"{path}: not UTF-8 ({err.reason})") from None
    except json.JSONDecodeError as err:
        raise ClassificationFormatError(
            f"{path}:{err.lineno}: malformed JSON ({err.msg}); expected one JSON array of objects "
            "(use task.format=jsonl for one object per line)"
        ) from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]  # {"data": [...]} wrappers
    if not isinstance(data, list):
        raise ClassificationFormatError(f"{path}: a JSON {type(data).__name__}, expected an array of objects")
    for index, record in enumerate(data):
        if not isinstance(record, dict):
            raise ClassificationFormatError(f"{path}:[{index}]: a JSON {type(record).__name__}, not an object")
        yield f"{path}:[{index}]", record


def read_labelled(
    path: str | os.PathLike,
    text_column: str,
    label_column: str | None,
    text_pair_column: str | None = None,
    file_format: str | None = "auto",
    skip_empty_text: bool = False,
) -> list[LabelledText]:
    """Rows of a labelled file; raises :class:`ClassificationFormatError` naming file and row.
    ``skip_empty_text``: rows with an empty text are left out and counted in a warning instead
    (NSMC's published files hold a few)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: check task.data_dir / task.train_file / task.eval_file")
    file_format = resolve_format(path, file_format)
    wanted = [c for c in (text_column, text_pair_column, label_column) if c]
    rows: list[LabelledText] = []
    skipped: list[str] = []
    for row, record in _records(path, file_format):
        short = [c for c in wanted if c in record and record[c] is None]
        if short:
            raise ClassificationFormatError(
                f"{row}: fewer fields than the header (no value for {short[0]!r}); check the delimiter or the row"
            )
        missing = [c for c in wanted if c not in record]
        if missing:
            have = ", ".join(str(k) for k in record if k is not None)
            raise ClassificationFormatError(
                f"{row}: no column {missing[0]!r} (columns here: {have}); set task.text_column / "
                "task.text_pair_column / task.label_column to the file's names"
            )
        text = str(record[text_column]).strip()
        pair = str(record[text_pair_column]).strip() if text_pair_column else None
        if skip_empty_text and (not text or (text_pair_column and not pair)):
            skipped.append(row)
            continue
        if not text or (text_pair_column and not pair):
            column = text_column if not text else text_pair_column
            raise ClassificationFormatError(f"{row}: empty {column!r}; remove the row or fill it in")
        label = str(record[label_column]).strip() if label_column else None
        if label_column and not label:
            raise ClassificationFormatError(f"{row}: empty label in {label_column!r}")
        rows.append(LabelledText(text, pair, label, row))
    if skipped:
        log.warning("%s: %d rows with an empty text left out (first: %s)", path, len(skipped), skipped[0])
    if not rows:
        raise ClassificationFormatError(f"{path}: no data rows")
    return rows


def label_order(train_rows: Sequence[LabelledText], configured: Sequence[str] | None) -> list[str]:
    """``configured`` when given (checked against the training labels), else the training labels sorted."""
    found = {r.label for r in train_rows}
    if configured:
        labels = [str(label) for label in configured]
        unknown = sorted(found - set(labels))
        if unknown:
            first = next(r for r in train_rows if r.label == unknown[0])
            raise ClassificationFormatError(
                f"{first.row}: label {unknown[0]!r} is not in task.labels={labels}; add it to task.labels, or set "
                "task.labels=null to take the labels found in the training file"
            )
        return labels
    if len(found) < 2:
        raise ClassificationFormatError(f"{train_rows[0].row.rsplit(':', 1)[0]}: one label only ({found}); nothing to learn")
    return sorted(found)


def label_ids(rows: Sequence[LabelledText], labels: Sequence[str]) -> list[int]:
    index = {label: i for i, label in enumerate(labels)}
    ids = []
    for r in rows:
        if r.label not in index:
            raise ClassificationFormatError(
                f"{r.row}: label {r.label!r} is not among the training labels {list(labels)}; fix the row or "
                "set task.labels to the full label list"
            )
        ids.append(index[r.label])
    return ids


# ------------------------------------------------------------------------ encoding
def encode_pairs(tokenizer, rows: Sequence[LabelledText], max_len: int, use_token_types: bool) -> list[dict]:
    """[CLS] a [SEP] (b [SEP]) with longest-first truncation to ``max_len``; token type 1 on
    the second segment when the encoder has token types (RoBERTa has one: all zeros)."""
    texts = [r.text for r in rows]
    pairs = [r.text_pair for r in rows]
    first = tokenizer.encode_ids_batch(texts)
    second = tokenizer.encode_ids_batch([p for p in pairs if p is not None]) if any(p is not None for p in pairs) else []
    second_iter = iter(second)
    examples = []
    for a, pair in zip(first, pairs, strict=True):
        b = next(second_iter) if pair is not None else None
        budget = max_len - (3 if b is not None else 2)
        a, b = list(a), (list(b) if b is not None else None)
        while len(a) + (len(b) if b is not None else 0) > budget:
            if b is not None and len(b) > len(a):
                b.pop()
            else:
                a.pop()
        input_ids = [tokenizer.cls_id, *a, tokenizer.sep_id]
        token_type_ids = [0] * len(input_ids)
        if b is not None:
            input_ids += [*b, tokenizer.sep_id]
            token_type_ids += [1 if use_token_types else 0] * (len(b) + 1)
        examples.append({"input_ids": input_ids, "token_type_ids": token_type_ids})
    return examples


class ClassificationDataset(Dataset):
    def __init__(self, examples: Sequence[dict], labels: Sequence[int] | None):
        self.examples, self.labels = list(examples), labels

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict:
        item = {**self.examples[index], "index": index}
        if self.labels is not None:
            item["label"] = self.labels[index]
        return item


class ClassificationCollator:
    """Right-pads a batch with the tokenizer's pad id (not assumed 0: RoBERTa's is 1)."""

    def __init__(self, pad_id: int, pad_to_multiple_of: int | None = None):
        self.pad_id, self.pad_to_multiple_of = pad_id, pad_to_multiple_of

    def __call__(self, examples: Sequence[dict]) -> dict[str, torch.Tensor]:
        length = max(len(e["input_ids"]) for e in examples)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        batch = len(examples)
        input_ids = torch.full((batch, length), self.pad_id, dtype=torch.long)
        token_type_ids = torch.zeros((batch, length), dtype=torch.long)
        attention_mask = torch.zeros((batch, length), dtype=torch.long)
        for i, e in enumerate(examples):
            n = len(e["input_ids"])
            input_ids[i, :n] = torch.tensor(e["input_ids"])
            token_type_ids[i, :n] = torch.tensor(e["token_type_ids"])
            attention_mask[i, :n] = 1
        out = {
            "input_ids": input_ids,
            "token_type_ids": token_type_ids,
            "attention_mask": attention_mask,
            "index": torch.tensor([e["index"] for e in examples]),
        }
        if "label" in examples[0]:
            out["labels"] = torch.tensor([e["label"] for e in examples])
        return out


class ClassificationDataModule(pl.LightningDataModule):
    """Train and evaluation rows, encoded once in ``setup``; the evaluation rows stay
    available (``eval_rows``) for the report and the predictions file."""

    def __init__(
        self,
        train_rows: Sequence[LabelledText],
        eval_rows: Sequence[LabelledText],
        labels: Sequence[str],
        tokenizer_dir: str | os.PathLike,
        max_len: int,
        use_token_types: bool,
        batch_size: int = 32,
        eval_batch_size: int = 64,
        num_workers: int = 0,
        pin_memory: bool = False,
        pad_to_multiple_of: int | None = None,
    ):
        super().__init__()
        self.train_rows, self.eval_rows, self.labels = list(train_rows), list(eval_rows), list(labels)
        self.tokenizer_dir, self.max_len, self.use_token_types = tokenizer_dir, max_len, use_token_types
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.num_workers, self.pin_memory, self.pad_to_multiple_of = num_workers, pin_memory, pad_to_multiple_of
        self._train = self._eval = None
        self.eval_label_ids: list[int] = []

    def setup(self, stage: str | None = None) -> None:
        if self._eval is not None:
            return
        from bert_lm.tokenizer.loading import load_tokenizer

        tokenizer = load_tokenizer(self.tokenizer_dir)
        self.pad_id = tokenizer.pad_id
        try:
            self.eval_label_ids = label_ids(self.eval_rows, self.labels)
            self._train = ClassificationDataset(
                encode_pairs(tokenizer, self.train_rows, self.max_len, self.use_token_types),
                label_ids(self.train_rows, self.labels),
            )
            self._eval = ClassificationDataset(
                encode_pairs(tokenizer, self.eval_rows, self.max_len, self.use_token_types), self.eval_label_ids
            )
        finally:
            tokenizer.close()

    def _loader(self, dataset: Dataset, batch_size: int, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            collate_fn=ClassificationCollator(self.pad_id, self.pad_to_multiple_of),
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self._train, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self._eval, self.eval_batch_size, shuffle=False)

"""Fill-mask data augmentation of a labelled set: new variants of each text, labels kept.

    python -m finetune.augment <model> --input train.tsv --output aug.tsv --task hate_speech \\
        --n 2 --mask-prob 0.15 --top-k 10 --action substitute --seed 0

For each row, ``--n`` variants: units of the text (whole Mecab morphemes with our
Mecab-aware tokenizer, whole words otherwise) are chosen with probability
``--mask-prob`` (at least one, at most ``ceil(mask_prob * units)``), each replaced by
one ``[MASK]`` (``--action substitute``) or given a ``[MASK]`` before it
(``--action insert``), and the masked-LM samples a piece from its top-k at each mask.
The new text is the old one with only the chosen units' character spans rewritten,
so every other character (spacing included) stays as it was.

What is never sampled: special tokens (``[UNK]`` included), the unit's own text, a
piece with no letter or digit (punctuation or a bare ``#``: it would delete the word
rather than vary it), a ``##``/continuation piece where a word starts or a word-start
piece inside a word,
pieces that are (part of) a personal-data placeholder of the cleaning step
(``[EMAIL]``, ``[PHONE]``, ``[RRN]``); units overlapping such a placeholder are never
chosen. A variant identical to its source (or to an earlier variant of the same row)
is dropped.

The output holds only the variants, in input order, each with every column of its
source row, plus ``aug_source_row`` (1-based data row of the source) and
``aug_changed_spans`` (JSON list of ``[start, end]`` character spans in the new text).
It is written in the input's format (CSV, TSV, JSON lines or a JSON array), atomically.

``<model>``: whatever ``bert_lm.fill_mask`` loads, the same way: a pretraining run directory
(its export, or the best checkpoint of a run stopped before it), one of its ``.ckpt`` files,
our HF export, or a published BERT / RoBERTa / ELECTRA directory with its own tokenizer files
(an ELECTRA pair or run fills masks with its generator).
"""

from __future__ import annotations

import argparse
import bisect
import csv
import json
import logging
import math
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from bert_lm.corpus.cleaning import EMAIL_PLACEHOLDER, PHONE_PLACEHOLDER, RRN_PLACEHOLDER
from bert_lm.fill_mask import load_for_fill_mask
from bert_lm.models.bert import BertForPreTraining
from bert_lm.tokenizer.korean_tokenizer import SPECIAL_TOKENS
from bert_lm.tokenizer.mecab_segmenter import CONTINUATION_PREFIX, morphemes_with_offsets

log = logging.getLogger(__name__)

# What cleaning puts in place of personal data: never a unit to change, never a piece to sample.
PLACEHOLDERS = (EMAIL_PLACEHOLDER, PHONE_PLACEHOLDER, RRN_PLACEHOLDER)
ACTIONS = ("substitute", "insert")
SOURCE_ROW_COLUMN = "aug_source_row"
SPANS_COLUMN = "aug_changed_spans"
# Mask kinds, the row of the allowed-piece table each one reads.
_WORD_START, _CONTINUATION = 0, 1


@dataclass(frozen=True)
class Task:
    text_column: str
    required_columns: tuple[str, ...]
    file_format: str  # "tsv" or "json" (a JSON array or JSON lines, told apart by the first character)


TASKS = {
    "hate_speech": Task("comments", ("comments", "contain_gender_bias", "bias", "hate"), "tsv"),
    "nsmc": Task("document", ("id", "document", "label"), "tsv"),
    # Only the hypothesis: an NLI label is a relation between the two sentences, and the
    # premise is the evidence. KLUE writes several hypotheses (one per label) from one
    # premise, so a rewritten premise would have to stay consistent with all of them, and
    # a changed word there can flip every pair's label at once; the short hypothesis is the
    # side a crowdworker wrote freely, so varying its wording is the natural augmentation.
    # (Augment the premise on purpose with --text-column premise.)
    "klue_nli": Task("hypothesis", ("premise", "hypothesis", "gold_label"), "json"),
}


@dataclass(frozen=True)
class Variant:
    text: str
    changed_spans: tuple[tuple[int, int], ...]  # [start, end) character spans in ``text``


class InputError(ValueError):
    """Bad input file: the message names the file and the line."""


# --------------------------------------------------------------------------- units
@dataclass(frozen=True)
class _Unit:
    first: int  # token index of its first token
    last: int  # token index after its last token
    start: int  # character span in the text
    end: int
    continues: bool  # continues a word (its replacement must be a continuation piece)


def _units(tokenizer, text: str, ids: list[int], offsets: list[tuple[int, int]], is_continuation) -> list[_Unit]:
    """Runs of tokens that change together: one Mecab morpheme, or one word (a word-start piece and its continuations)."""
    if not ids:
        return []
    if getattr(tokenizer, "mecab", False):
        # The same Mecab analysis encode() made: each morpheme is one WordPiece input word.
        morphemes = morphemes_with_offsets(text, SPECIAL_TOKENS)
        starts = [m.start for m in morphemes]
        keys = [max(0, bisect.bisect_right(starts, start) - 1) for start, _ in offsets]
        continues_by_key = {k: morphemes[k].piece.startswith(CONTINUATION_PREFIX) for k in set(keys)}
    else:
        keys, key = [], 0
        for index, token_id in enumerate(ids):
            key += index > 0 and not is_continuation[token_id]
            keys.append(key)
        continues_by_key = None
    units, first = [], 0
    for index in range(1, len(ids) + 1):
        if index == len(ids) or keys[index] != keys[first]:
            spans = [offsets[i] for i in range(first, index) if offsets[i][1] > offsets[i][0]]
            start = min((s for s, _ in spans), default=offsets[first][0])
            end = max((e for _, e in spans), default=start)
            if continues_by_key is not None:
                continues = continues_by_key[keys[first]]
            else:
                continues = first > 0 and bool(is_continuation[ids[first]])
            units.append(_Unit(first, index, start, end, continues))
            first = index
    return units


def _protected_spans(text: str) -> list[tuple[int, int]]:
    spans = []
    for placeholder in PLACEHOLDERS:
        start = text.find(placeholder)
        while start != -1:
            spans.append((start, start + len(placeholder)))
            start = text.find(placeholder, start + 1)
    return spans


# --------------------------------------------------------------------------- vocabulary
def _has_letter_or_digit(text: str) -> bool:
    """The one rule for both sides of a change: the unit replaced and the piece put in its place."""
    return any(c.isalnum() for c in text)


class _Vocabulary:
    """Each piece's text as it goes into a sentence, and which pieces may be sampled where."""

    def __init__(self, tokenizer, model_vocab_size: int):
        try:
            continuation = np.asarray(tokenizer.continuation_mask(), dtype=bool)
        except ValueError as err:
            log.warning("%s; every piece counts as a word start, units are single tokens", err)
            continuation = np.zeros(tokenizer.vocab_size, dtype=bool)
        self.is_continuation = continuation
        special = set(tokenizer.special_ids) | {tokenizer.unk_id, tokenizer.mask_id}
        special_strings = {tokenizer.id_to_token(i) for i in special} | set(SPECIAL_TOKENS)
        self.special_ids = special
        self.special_strings = tuple(s for s in special_strings if s)
        self.texts: list[str] = []
        allowed = torch.zeros(2, model_vocab_size, dtype=torch.bool)  # (kind, V)
        self.ids_by_text: dict[str, list[int]] = {}
        for token_id in range(tokenizer.vocab_size):
            text = self._piece_text(tokenizer, token_id, bool(continuation[token_id]))
            self.texts.append(text)
            if token_id in special or not self._may_be_sampled(text):
                continue
            allowed[_CONTINUATION if continuation[token_id] else _WORD_START, token_id] = True
            self.ids_by_text.setdefault(text, []).append(token_id)
        self.allowed = allowed

    @staticmethod
    def _piece_text(tokenizer, token_id: int, continuation: bool) -> str:
        # decode() of one piece: "##x" stays as it is (stripped here), "▁x" and byte-level "Ġx" lose their marker.
        text = tokenizer.decode([token_id], skip_special_tokens=False).strip()
        if continuation and text.startswith(CONTINUATION_PREFIX) and len(text) > len(CONTINUATION_PREFIX):
            text = text[len(CONTINUATION_PREFIX) :]
        return text

    def _may_be_sampled(self, text: str) -> bool:
        if not text or "\ufffd" in text or any(c.isspace() for c in text):
            return False
        # Units are chosen only where they hold a letter or digit; a punctuation piece in their place
        # ("미래를" -> "#") deletes content instead of varying it, and can unbalance brackets.
        if not _has_letter_or_digit(text):
            return False
        if any(text in p or p in text for p in PLACEHOLDERS):
            return False
        return not any(s in text for s in self.special_strings)


# --------------------------------------------------------------------------- augmentation
@dataclass(frozen=True)
class _Plan:
    row: int
    input_ids: list[int]  # [CLS] ... [SEP]
    mask_positions: list[int]
    units: list[_Unit]  # the unit each mask stands for (substitute) or stands before (insert)
    excluded: list[list[int]]  # per mask: ids that would give back the unit's own text


def _budget(mask_prob: float, units: int) -> int:
    return max(1, math.ceil(round(mask_prob * units, 9)))


def _choose(rng: np.random.Generator, eligible: list[int], mask_prob: float) -> list[int]:
    """Each eligible unit with probability mask_prob; at least one, at most the budget."""
    drawn = rng.random(len(eligible)) < mask_prob
    chosen = [u for u, hit in zip(eligible, drawn, strict=True) if hit]
    if not chosen:
        chosen = [eligible[int(rng.integers(len(eligible)))]]
    budget = _budget(mask_prob, len(eligible))
    if len(chosen) > budget:
        chosen = sorted(int(u) for u in rng.choice(chosen, size=budget, replace=False))
    return chosen


def _plans(tokenizer, vocabulary: _Vocabulary, texts, n, mask_prob, action, max_tokens, rng) -> list[_Plan]:
    plans = []
    for row, (text, encoding) in enumerate(zip(texts, tokenizer.encode_batch(list(texts)), strict=True)):
        ids, offsets = list(encoding.ids), [tuple(o) for o in encoding.offsets]
        units = _units(tokenizer, text, ids, offsets, vocabulary.is_continuation)
        protected = _protected_spans(text)

        # Units that touch no placeholder, hold no special token but [UNK], and hold a letter or digit:
        # swapping punctuation ("사람이냐" -> "사람이냐!", a quote dropped) adds no lexical variety and
        # can unbalance quotes and brackets.
        changeable = [
            index
            for index, unit in enumerate(units)
            if unit.end > unit.start
            and _has_letter_or_digit(text[unit.start : unit.end])
            and not any(s < unit.end and unit.start < e for s, e in protected)
            and not any(
                ids[i] in vocabulary.special_ids and ids[i] != tokenizer.unk_id for i in range(unit.first, unit.last)
            )
        ]
        # A text longer than the model reads: units are chosen in its first window only.
        window = max_tokens
        eligible = [i for i in changeable if units[i].last <= window]
        if action == "insert" and eligible:
            # Insert makes the input one token longer per chosen unit: leave room for the most there can be.
            window = max_tokens - _budget(mask_prob, len(eligible))
            eligible = [i for i in changeable if units[i].last <= window]
        if not eligible:
            continue
        context = ids[: min(len(ids), window)]
        for _ in range(n):
            chosen = [units[i] for i in _choose(rng, eligible, mask_prob)]
            by_first = {unit.first: unit for unit in chosen}
            input_ids, positions, excluded = [tokenizer.cls_id], [], []
            index = 0
            while index < len(context):
                unit = by_first.get(index)
                if unit is None:
                    input_ids.append(context[index])
                    index += 1
                    continue
                positions.append(len(input_ids))
                input_ids.append(tokenizer.mask_id)
                if action == "substitute":
                    own = vocabulary.ids_by_text.get(text[unit.start : unit.end], [])
                    excluded.append([*own, *context[unit.first : unit.last]] if unit.last - unit.first == 1 else own)
                    index = unit.last
                else:
                    excluded.append([])
                    input_ids.append(context[index])
                    index += 1
            input_ids.append(tokenizer.sep_id)
            plans.append(_Plan(row, input_ids, positions, chosen, excluded))
    return plans


def _sample(
    logits: torch.Tensor, kinds: list[int], excluded: list[list[int]], vocabulary: _Vocabulary, top_k, rng
) -> list[int | None]:
    """One id per row of ``logits`` (M, V), from the top-k allowed pieces; None where nothing is allowed."""
    allowed = vocabulary.allowed[torch.tensor(kinds)]  # (M, V)
    rows = [r for r, ids in enumerate(excluded) for _ in ids]
    if rows:
        allowed[torch.tensor(rows), torch.tensor([i for ids in excluded for i in ids])] = False
    masked = logits.float().masked_fill(~allowed, float("-inf"))
    values, candidates = masked.topk(min(top_k, masked.shape[-1]), dim=-1)  # (M, k)
    values, candidates = values.double().numpy(), candidates.numpy()
    chosen = []
    for row_values, row_ids in zip(values, candidates, strict=True):
        finite = np.isfinite(row_values)
        if not finite.any():
            chosen.append(None)
            continue
        weights = np.where(finite, np.exp(row_values - row_values[finite].max()), 0.0)
        cumulative = np.cumsum(weights / weights.sum())
        pick = min(int(np.searchsorted(cumulative, rng.random(), side="right")), int(finite.sum()) - 1)
        chosen.append(int(row_ids[pick]))
    return chosen


def _rebuild(text: str, edits: list[tuple[int, int, str]]) -> Variant:
    """``text`` with each (start, end) replaced by the new string; the new strings' spans in the result."""
    parts, spans, position, shift = [], [], 0, 0
    for start, end, new in sorted(edits):
        parts.append(text[position:start])
        spans.append((start + shift, start + shift + len(new)))
        parts.append(new)
        shift += len(new) - (end - start)
        position = end
    parts.append(text[position:])
    return Variant("".join(parts), tuple(spans))


def _counts(text: str, strings: Sequence[str]) -> list[int]:
    return [text.count(s) for s in strings]


@torch.no_grad()
def augment_rows(
    model: BertForPreTraining,
    tokenizer,
    texts: list[str],
    n: int = 2,
    mask_prob: float = 0.15,
    top_k: int = 10,
    action: str = "substitute",
    seed: int = 0,
    batch_size: int = 32,
    progress: bool = True,
) -> list[list[Variant]]:
    """Up to ``n`` variants of each text (fewer where a variant repeats its source or an earlier one)."""
    if n < 1 or top_k < 1 or batch_size < 1:
        raise ValueError(f"n={n}, top_k={top_k}, batch_size={batch_size}: each must be at least 1")
    if not 0 < mask_prob <= 1:
        raise ValueError(f"mask_prob={mask_prob}: must be in (0, 1]")
    if action not in ACTIONS:
        raise ValueError(f"action={action!r}: use one of {ACTIONS}")
    model.eval()
    device = next(model.parameters()).device
    vocabulary = _Vocabulary(tokenizer, model.config.vocab_size)
    rng = np.random.default_rng(seed)  # seeded once: unit choice first, then the samples, in row order
    max_tokens = model.config.max_sequence_length - 2  # room for [CLS] and [SEP]
    texts = list(texts)
    plans = _plans(tokenizer, vocabulary, texts, n, mask_prob, action, max_tokens, rng)
    guarded = (*PLACEHOLDERS, *vocabulary.special_strings)
    results: list[list[Variant]] = [[] for _ in texts]
    with tqdm(total=len(plans), desc="augment", unit="variant", disable=not progress) as bar:
        for batch_start in range(0, len(plans), batch_size):
            batch = plans[batch_start : batch_start + batch_size]
            length = max(len(p.input_ids) for p in batch)
            input_ids = torch.full((len(batch), length), tokenizer.pad_id, dtype=torch.long)
            attention_mask = torch.zeros((len(batch), length), dtype=torch.long)
            for b, plan in enumerate(batch):
                input_ids[b, : len(plan.input_ids)] = torch.tensor(plan.input_ids)
                attention_mask[b, : len(plan.input_ids)] = 1
            hidden, _ = model.bert(
                input_ids.to(device), torch.zeros_like(input_ids).to(device), attention_mask.to(device)
            )  # (B, T, H)
            rows = torch.tensor([b for b, plan in enumerate(batch) for _ in plan.mask_positions])
            cols = torch.tensor([p for plan in batch for p in plan.mask_positions])
            # The MLM head on the mask positions only: (M, V), the same numbers as full_mlm_logits there.
            logits = model.cls.predictions(hidden[rows.to(device), cols.to(device)]).cpu()
            kinds = [_CONTINUATION if u.continues else _WORD_START for plan in batch for u in plan.units]
            excluded = [ids for plan in batch for ids in plan.excluded]
            sampled = iter(_sample(logits, kinds, excluded, vocabulary, top_k, rng))
            for plan in batch:
                text = texts[plan.row]
                edits = []
                for unit in plan.units:
                    token_id = next(sampled)
                    if token_id is None:
                        continue
                    piece = vocabulary.texts[token_id]
                    if action == "substitute":
                        edits.append((unit.start, unit.end, piece))
                    else:
                        # A new word before a word that whitespace (or the text start) opens keeps its own space.
                        opens_word = not unit.continues and (unit.start == 0 or text[unit.start - 1].isspace())
                        edits.append((unit.start, unit.start, piece + " " if opens_word else piece))
                variant = _rebuild(text, edits)
                seen = {v.text for v in results[plan.row]}
                if (
                    edits
                    and variant.text != text
                    and variant.text not in seen
                    # No placeholder or special-token string made up by pieces meeting their neighbours.
                    and _counts(variant.text, guarded) == _counts(text, guarded)
                ):
                    results[plan.row].append(variant)
            bar.update(len(batch))
    return results


# --------------------------------------------------------------------------- files
def _file_format(path: Path, task: Task | None) -> str:
    if task is not None:
        kind = task.file_format
    else:
        suffix = path.suffix.lower()
        if suffix == ".csv":
            kind = "csv"
        elif suffix in (".tsv", ".tab", ".txt"):
            kind = "tsv"
        elif suffix in (".jsonl", ".ndjson", ".json"):
            kind = "json"
        else:
            raise InputError(f"{path}: cannot tell the format from {suffix!r}; use .csv, .tsv, .jsonl or .json")
    if kind == "json":
        head = ""
        with open(path, encoding="utf-8-sig") as f:
            while not head and (chunk := f.read(4096)):
                head = chunk.lstrip()
        kind = "json_array" if head.startswith("[") else "jsonl"
    return kind


def _read_delimited(path: Path, delimiter: str) -> tuple[list[str], list[dict], list[int]]:
    rows, lines = [], []
    with open(path, encoding="utf-8-sig", newline="") as f:
        # TSV without quoting, as the classification reader and the published files (NSMC, Korean
        # HateSpeech: comments with bare quotes) are read; CSV with the usual quoting.
        quoting = {"quoting": csv.QUOTE_NONE, "quotechar": None} if delimiter == "\t" else {}
        reader = csv.DictReader(f, delimiter=delimiter, **quoting)
        try:
            fieldnames = reader.fieldnames
            if not fieldnames:
                raise InputError(f"{path}:1: no header line (the file is empty)")
            line = reader.line_num
            for row in reader:
                first_line, line = line + 1, reader.line_num
                if None in row or any(value is None for value in row.values()):
                    fields = len(fieldnames) + len(row.get(None, [])) - sum(v is None for v in row.values())
                    raise InputError(f"{path}:{first_line}: {fields} fields, but the header has {len(fieldnames)}")
                rows.append(row)
                lines.append(first_line)
        except csv.Error as err:
            raise InputError(f"{path}:{reader.line_num}: {err}") from None
    return list(fieldnames), rows, lines


def _read_jsonl(path: Path) -> tuple[list[str], list[dict], list[int]]:
    rows, lines = [], []
    with open(path, encoding="utf-8-sig") as f:
        for line_number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise InputError(f"{path}:{line_number}: malformed JSON line ({err.msg}, column {err.colno})") from None
            if not isinstance(row, dict):
                raise InputError(f"{path}:{line_number}: expected a JSON object, got {type(row).__name__}")
            rows.append(row)
            lines.append(line_number)
    return list(dict.fromkeys(key for row in rows for key in row)), rows, lines


def _read_json_array(path: Path) -> tuple[list[str], list[dict], list[int]]:
    """A JSON array of objects, item by item so that each item's line is known."""
    content = path.read_text(encoding="utf-8-sig")
    decoder = json.JSONDecoder()
    rows, lines = [], []

    def skip(position: int) -> int:
        while position < len(content) and content[position].isspace():
            position += 1
        return position

    def line_of(position: int) -> int:
        return content.count("\n", 0, position) + 1

    position = skip(0) + 1  # past "["
    try:
        position = skip(position)
        if content[position : position + 1] == "]":
            position += 1
        else:
            while True:
                row, end = decoder.raw_decode(content, position)
                if not isinstance(row, dict):
                    raise InputError(f"{path}:{line_of(position)}: expected a JSON object, got {type(row).__name__}")
                rows.append(row)
                lines.append(line_of(position))
                position = skip(end)
                separator = content[position : position + 1]
                if separator == "]":
                    position += 1
                    break
                if separator != ",":
                    raise InputError(f"{path}:{line_of(position)}: malformed JSON (expected ',' or ']')")
                position = skip(position + 1)
    except json.JSONDecodeError as err:
        raise InputError(f"{path}:{err.lineno}: malformed JSON ({err.msg}, column {err.colno})") from None
    if skip(position) != len(content):
        raise InputError(f"{path}:{line_of(skip(position))}: unexpected text after the JSON array")
    return list(dict.fromkeys(key for row in rows for key in row)), rows, lines


def read_rows(path: Path, file_format: str) -> tuple[list[str], list[dict], list[int]]:
    """(column names, rows, the line each row starts on)."""
    try:
        if file_format in ("csv", "tsv"):
            return _read_delimited(path, "," if file_format == "csv" else "\t")
        if file_format == "jsonl":
            return _read_jsonl(path)
        return _read_json_array(path)
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not UTF-8 text ({err})") from None


def _check_rows(
    path: Path, file_format: str, fieldnames, rows, lines, text_column: str, required: Sequence[str]
) -> list[str]:
    """The texts to augment; InputError naming the line for a missing column or an empty text."""
    needed = list(dict.fromkeys((*required, text_column)))
    if file_format in ("csv", "tsv"):
        missing = [c for c in needed if c not in fieldnames]
        if missing:
            raise InputError(f"{path}:1: no column {missing[0]!r} in the header; the columns are {fieldnames}")
    texts = []
    for row, line in zip(rows, lines, strict=True):
        missing = [c for c in needed if c not in row]
        if missing:
            raise InputError(f"{path}:{line}: no {missing[0]!r} field in this row")
        text = row[text_column]
        if not isinstance(text, str):
            raise InputError(f"{path}:{line}: {text_column!r} is {type(text).__name__}, not text")
        if not text.strip():
            raise InputError(f"{path}:{line}: empty text in column {text_column!r}")
        texts.append(text)
    return texts


def _cell(value) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def write_rows(path: Path, file_format: str, fieldnames: list[str], rows: list[dict]) -> None:
    """All rows to a temporary file beside ``path``, then renamed over it: never a half-written output."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(
        "w", encoding="utf-8", newline="", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False
    )
    try:
        with handle as f:
            if file_format in ("csv", "tsv"):
                quoting = {"quoting": csv.QUOTE_NONE, "quotechar": None} if file_format == "tsv" else {}
                writer = csv.DictWriter(
                    f,
                    fieldnames=fieldnames,
                    delimiter="," if file_format == "csv" else "\t",
                    lineterminator="\n",
                    **quoting,
                )
                writer.writeheader()
                writer.writerows({k: _cell(v) for k, v in row.items()} for row in rows)
            elif file_format == "jsonl":
                f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
            else:
                json.dump(rows, f, ensure_ascii=False, indent=2)
                f.write("\n")
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    return a.exists() and b.exists() and os.path.samefile(a, b)


# --------------------------------------------------------------------------- command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m finetune.augment",
        description="Fill-mask augmentation of a labelled set: --n variants of each row, labels and columns kept.",
    )
    parser.add_argument(
        "model", help="pretraining run dir, one of its .ckpt files, HF export, or published BERT/RoBERTa/ELECTRA dir"
    )
    parser.add_argument("--input", required=True, type=Path)
    parser.add_argument("--output", required=True, type=Path, help="written in the input's format")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--task", choices=sorted(TASKS), help="a known dataset layout")
    source.add_argument("--text-column", help="column to augment in any .csv/.tsv/.jsonl/.json file")
    parser.add_argument("--n", type=int, default=2, help="variants per row")
    parser.add_argument("--mask-prob", type=float, default=0.15)
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--action", choices=ACTIONS, default="substitute")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=32, help="variants per forward pass")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        if not args.input.is_file():
            raise FileNotFoundError(f"{args.input}: no such file")
        if _same_file(args.input, args.output):
            raise ValueError(f"{args.output} is the input file: refusing to overwrite it; name another --output")
        task = TASKS[args.task] if args.task else None
        text_column = task.text_column if task else args.text_column
        file_format = _file_format(args.input, task)
        fieldnames, rows, lines = read_rows(args.input, file_format)
        texts = _check_rows(
            args.input, file_format, fieldnames, rows, lines, text_column, task.required_columns if task else ()
        )
        model, tokenizer = load_for_fill_mask(args.model)
        variants = augment_rows(
            model,
            tokenizer,
            texts,
            n=args.n,
            mask_prob=args.mask_prob,
            top_k=args.top_k,
            action=args.action,
            seed=args.seed,
            batch_size=args.batch_size,
            progress=not args.no_progress,
        )
        delimited = file_format in ("csv", "tsv")
        out_rows = []
        for number, (row, row_variants) in enumerate(zip(rows, variants, strict=True), start=1):
            for variant in row_variants:
                spans = [list(span) for span in variant.changed_spans]
                out_rows.append(
                    {
                        **row,
                        text_column: variant.text,
                        SOURCE_ROW_COLUMN: str(number) if delimited else number,
                        SPANS_COLUMN: json.dumps(spans) if delimited else spans,
                    }
                )
        out_fields = [*fieldnames, *(c for c in (SOURCE_ROW_COLUMN, SPANS_COLUMN) if c not in fieldnames)]
        write_rows(args.output, file_format, out_fields, out_rows)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {len(out_rows)} variants of {len(rows)} rows to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

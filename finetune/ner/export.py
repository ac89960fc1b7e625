"""A finetuned NER tagger on disk, and the predictor that reads it back.

``ner_export/`` (written at the end of ``run_finetune.py``) holds ``ner_model.pt`` --
the tagger's weights, its encoder config, the label list, the head and the window
settings, plain tensors and containers loaded with ``torch.load(weights_only=True)`` --
and the tokenizer files. Sentences longer than the model length are read in overlapping
windows, as in evaluation, so every character gets a tag.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from bert_lm.models.bert import BertConfig
from bert_lm.models.hf_interop import copy_tokenizer_files
from bert_lm.tokenizer.korean_tokenizer import KoreanTokenizer
from bert_lm.tokenizer.loading import load_tokenizer
from finetune.ner.data import NerCollator, NerWindowDataset, char_tags_from_windows, encode_sentences
from finetune.ner.klue_ner import entity_spans
from finetune.ner.module import BertNerTagger

NER_EXPORT_DIR = "ner_export"
_EXPORT_KEYS = ("encoder_config", "labels", "head", "constrained_transitions", "state_dict", "max_len", "stride")
MODEL_FILE = "ner_model.pt"
# 2: the CRF's end scores are stored as a parametrization (sequences open and close with O); version 1
# exports, with plain end scores, still load (the tagger renames them).
FORMAT_VERSION = 2
READABLE_FORMAT_VERSIONS = (1, 2)


@dataclass(frozen=True)
class Entity:
    text: str
    type: str
    start: int  # character offsets into the sentence, end exclusive
    end: int


def save_ner_export(
    tagger: BertNerTagger,
    tokenizer_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    max_len: int,
    stride: int | None,
) -> Path:
    """Write what :func:`load_ner_export` needs into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    copy_tokenizer_files(tokenizer_dir, out_dir)
    export = {
        "format_version": FORMAT_VERSION,
        "encoder_config": vars(tagger.config).copy(),
        "labels": list(tagger.labels),
        "head": tagger.head,
        "constrained_transitions": bool(tagger.crf is not None and tagger.crf.constrained_transitions),
        "max_len": int(max_len),
        "stride": stride,
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in tagger.state_dict().items()},
    }
    torch.save(export, out_dir / MODEL_FILE)
    return out_dir


class NerPredictor:
    """A loaded tagger + tokenizer; :meth:`char_tags` and :meth:`entities` for raw text."""

    def __init__(
        self, tagger: BertNerTagger, tokenizer: KoreanTokenizer, max_len: int, stride: int | None, batch_size: int = 32
    ):
        self.tagger = tagger.eval()
        self.tokenizer = tokenizer
        self.max_len, self.stride, self.batch_size = max_len, stride, batch_size

    @torch.no_grad()
    def char_tags(self, texts: Sequence[str]) -> list[list[str]]:
        """One BIO tag per character of each text."""
        sentences = encode_sentences(texts, None, self.tokenizer, self.max_len, self.stride)
        label2id = {label: i for i, label in enumerate(self.tagger.labels)}
        dataset = NerWindowDataset(
            sentences,
            cls_id=self.tokenizer.cls_id,
            sep_id=self.tokenizer.sep_id,
            label2id=label2id,
            sort_by_length=True,
        )
        collate = NerCollator(self.tokenizer.pad_id)
        predictions = {}
        for start in range(0, len(dataset), self.batch_size):
            batch = collate([dataset[i] for i in range(start, min(start + self.batch_size, len(dataset)))])
            emissions = self.tagger(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
            paths = self.tagger.decode(emissions, batch["attention_mask"])
            keys = zip(batch["sentence_index"].tolist(), batch["window_index"].tolist(), strict=True)
            for key, path in zip(keys, paths, strict=True):
                predictions[key] = path[1:-1]
        return char_tags_from_windows(sentences, predictions, self.tagger.labels)

    def entities(self, texts: Sequence[str]) -> list[list[Entity]]:
        return [
            [Entity(text[start:end], entity_type, start, end) for entity_type, start, end in entity_spans(tags)]
            for text, tags in zip(texts, self.char_tags(texts), strict=True)
        ]


def load_ner_export(path: str | os.PathLike) -> NerPredictor:
    """A finetune run directory (its ``ner_export/``) or the export directory itself."""
    path = Path(path).expanduser()
    export_dir = path / NER_EXPORT_DIR if (path / NER_EXPORT_DIR).is_dir() else path
    model_file = export_dir / MODEL_FILE
    if not model_file.is_file():
        raise FileNotFoundError(
            f"{path}: no {NER_EXPORT_DIR}/{MODEL_FILE} or {MODEL_FILE}; pass the run_dir: that run_finetune.py "
            "printed (or its ner_export/ directory)"
        )
    rewrite = "re-run run_finetune.py to write it again"
    try:
        export = torch.load(model_file, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling errors come in several types
        raise ValueError(f"{model_file}: not a readable NER export ({type(err).__name__}); {rewrite}") from None
    if not isinstance(export, dict):
        raise ValueError(f"{model_file}: holds a {type(export).__name__}, not an NER export; {rewrite}")
    if export.get("format_version") not in READABLE_FORMAT_VERSIONS:
        raise ValueError(
            f"{model_file}: format_version {export.get('format_version')}, this code reads {READABLE_FORMAT_VERSIONS}"
        )
    missing = [key for key in _EXPORT_KEYS if key not in export]
    if missing:
        raise ValueError(f"{model_file}: lacks {', '.join(missing)}; {rewrite}")
    tagger = BertNerTagger(
        BertConfig(**export["encoder_config"]), export["labels"], export["head"], export["constrained_transitions"]
    )
    try:
        tagger.load_state_dict(export["state_dict"])
    except RuntimeError as err:
        raise ValueError(f"{model_file}: weights do not fit the model it describes: {err}") from None
    tokenizer = load_tokenizer(export_dir)
    if tokenizer.vocab_size != tagger.config.vocab_size:
        raise ValueError(f"{export_dir}: tokenizer has {tokenizer.vocab_size} tokens, model {tagger.config.vocab_size}")
    return NerPredictor(tagger, tokenizer, export["max_len"], export["stride"])

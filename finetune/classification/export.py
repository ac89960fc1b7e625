"""A finetuned classifier on disk, and the predictor that reads it back.

``classification_export/`` holds ``classifier.pt`` (label order, encoder config,
whether the pooler is read, the pooling, max_len, whether it reads sentence pairs, weights:
plain containers, read with
``torch.load(weights_only=True)``) and the tokenizer files, so that
``python -m finetune.predict <run dir> "문장"`` and the test-file scoring of
``run_finetune.py`` use the very model that was selected.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from bert_lm.models.bert import BertConfig
from bert_lm.models.hf_interop import copy_tokenizer_files
from bert_lm.tokenizer.loading import load_tokenizer
from finetune.classification.data import ClassificationCollator, LabelledText, encode_pairs
from finetune.classification.module import BertSequenceClassifier

CLASSIFICATION_EXPORT_DIR = "classification_export"
MODEL_FILE = "classifier.pt"
FORMAT_VERSION = 1
_EXPORT_KEYS = ("encoder_config", "labels", "use_pooler", "state_dict", "max_len")


def save_classification_export(
    classifier: BertSequenceClassifier,
    tokenizer_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    max_len: int,
    pairs: bool,
) -> Path:
    """``pairs``: trained on sentence pairs (``task.text_pair_column``), so a prediction needs both texts."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    copy_tokenizer_files(tokenizer_dir, out_dir)
    export = {
        "format_version": FORMAT_VERSION,
        "encoder_config": vars(classifier.config).copy(),
        "labels": list(classifier.labels),
        "use_pooler": bool(classifier.use_pooler),
        "pooling": classifier.pooling,
        "max_len": int(max_len),
        "pairs": bool(pairs),
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in classifier.state_dict().items()},
    }
    torch.save(export, out_dir / MODEL_FILE)
    return out_dir


class ClassificationPredictor:
    """A loaded classifier + tokenizer: class probabilities for raw texts (and pairs)."""

    def __init__(
        self,
        classifier: BertSequenceClassifier,
        tokenizer,
        max_len: int,
        batch_size: int = 64,
        pairs: bool | None = None,
    ):
        self.classifier = classifier.eval()
        self.tokenizer, self.max_len, self.batch_size = tokenizer, max_len, batch_size
        self.labels = list(classifier.labels)
        self.pairs = pairs  # trained on sentence pairs; None: an export that predates the flag

    @torch.no_grad()
    def probabilities(self, texts: Sequence[str], pairs: Sequence[str] | None = None) -> list[list[float]]:
        # A pair model fed one sentence (or the reverse) still gives confident-looking probabilities.
        if self.pairs and pairs is None:
            raise ValueError(
                f"this classifier ({', '.join(self.labels)}) was trained on sentence pairs: give the second text "
                "of each pair (finetune.predict: --pair <text> once per sentence)"
            )
        if self.pairs is False and pairs is not None:
            raise ValueError("this classifier was trained on single sentences: drop the second texts (--pair)")
        rows = [LabelledText(t, p, None, "") for t, p in zip(texts, pairs or [None] * len(texts), strict=True)]
        use_token_types = self.classifier.config.type_vocab_size > 1
        examples = encode_pairs(self.tokenizer, rows, self.max_len, use_token_types)
        collate = ClassificationCollator(self.tokenizer.pad_id)
        out: list[list[float]] = []
        for start in range(0, len(examples), self.batch_size):
            chunk = [{**e, "index": i} for i, e in enumerate(examples[start : start + self.batch_size])]
            batch = collate(chunk)
            logits = self.classifier(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
            out.extend(logits.float().softmax(-1).tolist())
        return out

    def predict(self, texts: Sequence[str], pairs: Sequence[str] | None = None) -> list[str]:
        return [self.labels[max(range(len(p)), key=p.__getitem__)] for p in self.probabilities(texts, pairs)]


def is_classification_export(path: str | os.PathLike) -> bool:
    path = Path(path).expanduser()
    return (path / MODEL_FILE).is_file() or (path / CLASSIFICATION_EXPORT_DIR / MODEL_FILE).is_file()


def load_classification_export(path: str | os.PathLike) -> ClassificationPredictor:
    """A finetune run directory (its ``classification_export/``) or the export directory itself."""
    path = Path(path).expanduser()
    export_dir = path / CLASSIFICATION_EXPORT_DIR if (path / CLASSIFICATION_EXPORT_DIR).is_dir() else path
    model_file = export_dir / MODEL_FILE
    if not model_file.is_file():
        raise FileNotFoundError(
            f"{path}: no {CLASSIFICATION_EXPORT_DIR}/{MODEL_FILE}; pass the run_dir: that run_finetune.py printed"
        )
    rewrite = "re-run run_finetune.py to write it again"
    try:
        export = torch.load(model_file, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling errors come in several types
        raise ValueError(
            f"{model_file}: not a readable classification export ({type(err).__name__}); {rewrite}"
        ) from None
    if not isinstance(export, dict) or export.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{model_file}: not a classification export of format {FORMAT_VERSION}; {rewrite}")
    missing = [key for key in _EXPORT_KEYS if key not in export]
    if missing:
        raise ValueError(f"{model_file}: lacks {', '.join(missing)}; {rewrite}")
    try:
        # Exports written before finetune.pooling existed read the [CLS] vector.
        classifier = BertSequenceClassifier(
            BertConfig(**export["encoder_config"]),
            export["labels"],
            export["use_pooler"],
            pooling=export.get("pooling", "cls"),
        )
    except ValueError as err:
        raise ValueError(f"{model_file}: {err}; {rewrite}") from None
    try:
        classifier.load_state_dict(export["state_dict"])
    except RuntimeError as err:
        raise ValueError(f"{model_file}: weights do not fit the model it describes: {err}") from None
    tokenizer = load_tokenizer(export_dir)
    if tokenizer.vocab_size != classifier.config.vocab_size:
        raise ValueError(
            f"{export_dir}: tokenizer has {tokenizer.vocab_size} tokens, model {classifier.config.vocab_size}"
        )
    return ClassificationPredictor(classifier, tokenizer, export["max_len"], pairs=export.get("pairs"))

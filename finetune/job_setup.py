"""What every finetuning job shares, whatever its task: the config schemas of the task and
finetune groups, Hydra setup and override checks, and where the encoder comes from.

``pretrained=<run dir | .ckpt | HF dir>`` (see :mod:`bert_lm.training.encoder_loading`):
architecture, tokenizer and weights from there; with ``finetune.init=random`` the weights
are re-initialised (same architecture and tokenizer: the ablation that measures what
pretraining brought). Without ``pretrained`` (the default, so that ``python run_finetune.py``
works offline on a fresh clone): a randomly initialised encoder of the ``model`` group's
shape, with the tokenizer ``tokenizer.dir`` names or one trained with the ``tokenizer``
group's settings on the task's training text (cached under ``cache/tokenizers``): the
no-pretraining baseline; ``finetune.init=pretrained`` without ``pretrained=`` is an error.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from bert_lm.config.hydra_setup import check_overrides, setup_hydra
from bert_lm.config.schema import explain_config_error
from bert_lm.corpus.prepare import TRAIN_FILE
from bert_lm.models.bert import BertConfig
from bert_lm.tokenizer.loading import load_tokenizer
from bert_lm.training.corpus_pipeline import ensure_tokenizer
from bert_lm.training.encoder_loading import load_encoder, resolve_source
from bert_lm.training.run_support import ConfigError, record_model_config
from bert_lm.training.strategies import check_strategy_runnable
from finetune.ner.klue_ner import KLUE_NER_LABELS, read_klue_ner

CONFIG_NAME = "finetune"
INITS = ("auto", "pretrained", "random")


# ------------------------------------------------------------------ config schemas
@dataclass
class TaskSchema:
    name: str = "klue_ner"
    kind: str = "ner"
    experiment_name: str = "bert-lm-klue-ner"  # the MLflow experiment
    run_dir_name: str = "klue-ner"  # outputs/<run_dir_name>/<date>/<time>
    monitor: str = "val/entity_macro_f1"  # model selection on the evaluation file
    data_dir: str = "???"
    train_file: str | None = None
    eval_file: str | None = None
    test_file: str | None = None  # scored once, with the selected model
    download: bool = False
    download_dir: str = "???"
    labels: list = field(default_factory=lambda: list(KLUE_NER_LABELS))
    max_len: int = 128
    stride: int | None = None
    batch_size: int = 16
    eval_batch_size: int = 64
    group_by_length: bool = True


@dataclass
class FinetuneSchema:
    init: str = "auto"  # auto | pretrained | random
    head: str = "crf"  # crf | softmax
    constrained_transitions: bool = True
    classifier_dropout: float | None = None
    encoder_dropout: float | None = None  # null: the encoder config's own dropout
    encoder_lr: float = 1e-4
    head_lr: float = 1e-3
    weight_decay: float = 0.01
    adam_eps: float = 1e-8
    betas: list = field(default_factory=lambda: [0.9, 0.999])
    scheduler: str = "linear"
    warmup_steps: int | None = None
    warmup_ratio: float = 0.1
    pooler: str = "auto"  # classification: read the pooler? auto: when NSP trained it
    pooling: str = "cls"  # classification: cls | mean (the mean of the token vectors)


@dataclass
class ClassificationTaskSchema:
    name: str = "classification"
    kind: str = "classification"
    experiment_name: str = "bert-lm-classification"
    run_dir_name: str = "classification"
    monitor: str = "val/macro_f1"
    data_dir: str = "???"
    train_file: str | None = None
    eval_file: str | None = None  # null: task.eval_ratio of the training rows are held out
    eval_ratio: float = 0.1
    test_file: str | None = None  # scored once, with the selected model
    augment_file: str | None = None  # extra training rows (python -m finetune.augment)
    format: str = "auto"  # auto (by extension) | tsv | csv | jsonl | json
    text_column: str = "text"
    text_pair_column: str | None = None
    label_column: str = "label"
    labels: list | None = None  # null: the labels of the training file, sorted
    skip_empty_text: bool = False  # true: leave rows with an empty text out (with a warning)
    class_weights: Any = None  # null | balanced | [one weight per label]
    download: bool = False
    download_dir: str = "???"
    max_len: int = 128
    batch_size: int = 32
    eval_batch_size: int = 64


_FINETUNE_SCHEMAS = {
    "TaskSchema": TaskSchema,
    "ClassificationTaskSchema": ClassificationTaskSchema,
    "FinetuneSchema": FinetuneSchema,
}


def setup_finetune_hydra() -> None:
    """:func:`bert_lm.config.hydra_setup.setup_hydra` plus the task and finetune group schemas."""
    setup_hydra()
    store = ConfigStore.instance()
    store.store(group="task", name="task_schema", node=TaskSchema)
    store.store(group="task", name="classification_task_schema", node=ClassificationTaskSchema)
    store.store(group="finetune", name="finetune_schema", node=FinetuneSchema)


def _explain(message: str) -> str | None:
    # bert_lm.config.schema knows the pretraining groups; add the two of this job.
    return explain_config_error(
        message, schemas=_FINETUNE_SCHEMAS, group_schemas={"task": TaskSchema, "finetune": FinetuneSchema}
    )


def check_finetune_overrides(overrides: list[str]) -> None:
    """Exit with a clear message, naming the valid keys, if the overrides do not compose."""
    check_overrides(overrides, CONFIG_NAME, setup=setup_finetune_hydra, explain=_explain)


# --------------------------------------------------------------------------- encoder
def resolve_init(cfg: DictConfig) -> str:
    """``pretrained`` or ``random``, from ``finetune.init`` and ``pretrained``."""
    init = cfg.finetune.init
    if init not in INITS:
        raise ConfigError(f"finetune.init={init!r}: use one of {INITS}")
    if init == "pretrained" and not cfg.pretrained:
        raise ConfigError(
            "finetune.init=pretrained needs pretrained=<run dir | .ckpt | HF dir>: pass the run_dir: that "
            "run.py printed, or finetune.init=random for the no-pretraining baseline"
        )
    if init == "auto":
        return "pretrained" if cfg.pretrained else "random"
    return init


def check_job_config(cfg: DictConfig) -> None:
    """The checks every finetuning job makes before it reads data: ``finetune.init``,
    ``finetune.encoder_dropout``, one process on a strategy this machine can run, and a
    ``pretrained`` source that can be loaded."""
    resolve_init(cfg)
    check_encoder_dropout(cfg.finetune.encoder_dropout)
    check_strategy_runnable(cfg.strategy)
    # Why one process: each job scores its evaluation file once, at the end, in this process.
    if cfg.strategy.name != "auto" or cfg.trainer.devices not in (1, "1"):
        raise ConfigError(
            f"strategy={cfg.strategy.name}, trainer.devices={cfg.trainer.devices}: finetuning evaluates in one "
            "process; use strategy=auto trainer.devices=1 (a BERT of these sizes finetunes on one device)"
        )
    if cfg.pretrained:
        try:  # what it is and where its tokenizer is, before any data work
            resolve_source(cfg.pretrained, cfg.tokenizer.dir)
        except (FileNotFoundError, ValueError) as err:
            raise ConfigError(f"pretrained: {err}") from None


def ensure_task_tokenizer(cfg: DictConfig, train_file: Path, train_texts: Callable[[], list[str]]) -> Path:
    """``tokenizer.dir``, or a tokenizer trained with the ``tokenizer`` group's settings
    on the task's train sentences (cached by content hash, like pretraining's)."""
    digest = hashlib.sha256(train_file.read_bytes()).hexdigest()[:16]
    text_dir = Path(cfg.paths.cache_dir) / "task_text" / f"{cfg.task.name}-train-{digest}"
    if not (text_dir / TRAIN_FILE).is_file():
        text_dir.mkdir(parents=True, exist_ok=True)
        # A name of this process's own: parallel finetuning runs may write the same text at once.
        tmp = text_dir / f".{TRAIN_FILE}.{os.getpid()}.tmp"
        tmp.write_text("".join(t.strip() + "\n" for t in train_texts() if t.strip()), encoding="utf-8")
        os.replace(tmp, text_dir / TRAIN_FILE)
    return ensure_tokenizer(cfg.tokenizer, text_dir, cfg.paths.cache_dir, show_progress=False)


def with_encoder_dropout(config: dict, dropout: float | None) -> dict:
    """``config`` with its hidden and attention dropout set to ``dropout`` (None: unchanged).

    Why: an encoder pretrained without dropout (the small-budget recipe, after cramming)
    exports ``hidden_dropout_prob=0``, and finetuning reads the exported config; cramming
    pretrains without dropout and finetunes with 0.1. Published checkpoints say 0.1 already.
    """
    if dropout is None:
        return config
    check_encoder_dropout(dropout)
    return {**config, "hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout}


def check_encoder_dropout(dropout: float | None) -> None:
    if dropout is not None and not 0.0 <= dropout < 1.0:
        raise ConfigError(
            f"finetune.encoder_dropout={dropout}: use a probability in [0, 1), or null for the encoder's own"
        )


@dataclass
class EncoderChoice:
    """The encoder a run starts from: its config, the weights to copy (None: keep the
    random init), its tokenizer and a one-line description for logs and MLflow."""

    config: dict
    weights: object | None  # bert_lm.models.bert.BertModel
    tokenizer_dir: Path
    description: str


def record_encoder(cfg: DictConfig, encoder: EncoderChoice) -> None:
    """With ``pretrained=`` the encoder's architecture is the checkpoint's, not the ``model``
    group's: write it into ``cfg.model``, so that MLflow's ``model/*`` params and
    resolved_config.yaml describe the encoder that was finetuned."""
    if cfg.pretrained:
        record_model_config(cfg, encoder.config)


def build_encoder(
    cfg: DictConfig, init: str, train_file: Path, train_texts: Callable[[], list[str]] | None = None
) -> EncoderChoice:
    """The encoder to finetune; ``train_texts`` gives the task's training text (default: the
    KLUE NER sentences of ``train_file``) for the [UNK] check and the baseline's tokenizer."""
    if train_texts is None:

        def train_texts() -> list[str]:
            return [s.text for s in read_klue_ner(train_file, list(cfg.task.labels))]

    if cfg.pretrained:
        encoder, tokenizer_dir = load_encoder(cfg.pretrained, cfg.tokenizer.dir)
        tokenizer = load_tokenizer(tokenizer_dir)
        if hasattr(tokenizer, "check_unknown_rate"):  # a published checkpoint's tokenizer on this task's text
            tokenizer.check_unknown_rate(train_texts()[:500])
        tokenizer.close()
        source = resolve_source(cfg.pretrained, cfg.tokenizer.dir)
        weights = encoder if init == "pretrained" else None
        what = "pretrained weights" if weights is not None else "random weights (finetune.init=random)"
        description = f"{what}, architecture and tokenizer from {source.weights}"
        config = with_encoder_dropout(vars(encoder.config).copy(), cfg.finetune.encoder_dropout)
        return EncoderChoice(config, weights, tokenizer_dir, description)
    tokenizer_dir = ensure_task_tokenizer(cfg, train_file, train_texts)
    tokenizer = load_tokenizer(tokenizer_dir)
    config = {
        **{k: v for k, v in OmegaConf.to_container(cfg.model, resolve=True).items() if k != "generator_size"},
        "vocab_size": tokenizer.vocab_size,
        "pad_token_id": tokenizer.pad_id,
    }
    tokenizer.close()
    config = with_encoder_dropout(config, cfg.finetune.encoder_dropout)
    BertConfig(**config)  # validates
    description = (
        f"random weights, model group shape (no pretrained= given: the no-pretraining baseline), "
        f"tokenizer {tokenizer_dir}"
    )
    return EncoderChoice(config, None, tokenizer_dir, description)

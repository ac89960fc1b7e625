"""Structured-config schemas for the Hydra groups in ``conf/``.

Each group's YAML files start with ``defaults: [<group>_schema, _self_]``, so a
mistyped key in a file or on the command line fails at composition instead of
being silently ignored. :func:`explain_config_error` turns OmegaConf's terse
"Key 'x' not in 'DataConfig'" into a message that lists the valid keys.

Settings are split by what they change (as in cramming): ``data`` (corpus,
cleaning, examples), ``tokenizer``, ``model`` (architecture), ``train``
(objective and schedule), and ``impl`` for what only changes speed.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

from hydra.core.config_store import ConfigStore


@dataclass
class CleaningSchema:
    normalization: str | None = "NFKC"
    strip_control: bool = True
    collapse_whitespace: bool = True
    squeeze_repeats: bool = False
    max_repeat: int = 2
    mask_personal_data: bool = False
    drop_duplicate_documents: bool = True


@dataclass
class DataSchema:
    name: str = "sample"
    source: str = "plain"  # plain | lines | petitions | namuwiki | jsonl | csv | tsv | parquet | datasets
    root: str = "???"
    file_pattern: str = "*"
    text_field: str = "text"  # jsonl: the JSON field that holds a document's text
    text_column: str = "text"  # csv, tsv, parquet, datasets: the column that holds a document's text
    split_sentences: bool = False
    valid_ratio: float = 0.1
    split_seed: int = 42
    on_decode_error: str = "raise"  # raise | skip
    min_sentence_chars: int = 2
    # Fetch the public archive into root when it is missing (needs a network).
    download: bool = False
    download_months: list = field(default_factory=list)
    cleaning: CleaningSchema = field(default_factory=CleaningSchema)
    # Pretraining examples (issue B): sequence building and MLM masking.
    max_len: int = 128
    short_seq_prob: float = 0.1
    nsp_prob: float = 0.5
    mask_ratio: float = 0.15
    mask_token_prob: float = 0.8
    random_token_prob: float = 0.1
    whole_word_mask: bool = False
    # Without NSP: fill each sequence from consecutive documents, [SEP] between them
    # (RoBERTa's FULL-SENTENCES, HF run_mlm's group_texts), for corpora of short documents.
    pack_documents: bool = False
    batch_size: int = 32


@dataclass
class TokenizerSchema:
    mecab: bool = True
    vocab_size: int = 20_000
    min_frequency: int = 2
    limit_alphabet: int = 6_000
    # A saved tokenizer directory to use instead of training one.
    dir: str | None = None


@dataclass
class ModelSchema:
    """Fields of :class:`bert_lm.models.bert.BertConfig` (HF names)."""

    vocab_size: int | None = None  # from the tokenizer at run time
    hidden_size: int = 256
    num_hidden_layers: int = 2
    num_attention_heads: int = 8
    intermediate_size: int = 512
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 128
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    model_type: str = "bert"  # bert | roberta | electra (init_from= brings its checkpoint's own)
    embedding_size: int | None = None  # ELECTRA-style factorised embeddings; None = hidden_size
    position_init: str = "normal"  # normal | sinusoidal: how a fresh model's position table starts
    tie_word_embeddings: bool = True  # false: the MLM output projection is a matrix of its own
    generator_size: float = 0.25  # electra: the generator's share of the discriminator's width


@dataclass
class TrainSchema:
    train_mlm: bool = True
    train_nsp: bool = True
    lr: float = 5e-4
    weight_decay: float = 0.01
    adam_eps: float = 1e-6
    betas: list = field(default_factory=lambda: [0.9, 0.999])
    scheduler: str = "linear"
    warmup_steps: int | None = None
    warmup_ratio: float = 0.06
    budget_minutes: float | None = None  # stop at this much training time; schedule follows it
    objective: str = "mlm"  # mlm (train_mlm / train_nsp) | electra (replaced-token detection)
    disc_weight: float = 50.0  # electra: loss = generator MLM + disc_weight x discriminator


@dataclass
class ImplSchema:
    precision: str = "32"
    num_workers: int = 0
    pin_memory: bool = False
    persistent_workers: bool = True
    pad_to_multiple_of: int | None = None
    matmul_precision: str = "high"


@dataclass
class StrategySchema:
    name: str = "auto"
    requires_cuda: bool = False
    optimizer: str = "torch_adamw"  # torch_adamw | deepspeed_cpu_adam
    lightning: Any = "auto"  # "auto" or a node with _target_


@dataclass
class PathsSchema:
    root_dir: str = "???"
    cache_dir: str = "???"
    output_dir: str = "???"


def register_schemas() -> None:
    store = ConfigStore.instance()
    store.store(group="data", name="data_schema", node=DataSchema)
    store.store(group="tokenizer", name="tokenizer_schema", node=TokenizerSchema)
    store.store(group="paths", name="paths_schema", node=PathsSchema)
    store.store(group="model", name="model_schema", node=ModelSchema)
    store.store(group="train", name="train_schema", node=TrainSchema)
    store.store(group="impl", name="impl_schema", node=ImplSchema)
    store.store(group="strategy", name="strategy_schema", node=StrategySchema)


_GROUP_SCHEMAS = {
    "data": DataSchema,
    "tokenizer": TokenizerSchema,
    "paths": PathsSchema,
    "model": ModelSchema,
    "train": TrainSchema,
    "impl": ImplSchema,
    "strategy": StrategySchema,
}
_SCHEMAS = {schema.__name__: schema for schema in (*_GROUP_SCHEMAS.values(), CleaningSchema)}


def explain_config_error(
    message: str, schemas: dict[str, type] | None = None, group_schemas: dict[str, type] | None = None
) -> str | None:
    """A clearer message for an unknown key (naming the valid keys) or a value of
    the wrong type (naming the key and the expected type); None otherwise.

    ``schemas`` (by class name) and ``group_schemas`` (by config group) add schemas
    registered elsewhere, e.g. the finetuning job's ``task`` and ``finetune`` groups."""
    wrong_type = re.search(r"Value '([^']*)' (?:of type '\w+' )?could not be converted to (\w+)", message)
    full_key = re.search(r"full_key: (\S+)", message)
    if wrong_type and full_key:
        value, expected = wrong_type.groups()
        return (
            f"config key '{full_key.group(1)}' expects a {expected.lower()}, got {value!r}: "
            f"fix the value on the command line or in conf/"
        )
    match = re.search(r"Key '([^']+)' (?:not in|is not in struct)", message)
    if not match:
        return None
    bad_key = match.group(1)
    location = full_key.group(1) if full_key else bad_key
    schema_name = re.search(r"not in '(\w+)'", message)
    schema = {**_SCHEMAS, **(schemas or {})}.get(schema_name.group(1)) if schema_name else None
    if schema is None:
        # Fall back on the group named by the full key (data.x -> DataSchema).
        group = location.split(".")[0]
        schema = {**_GROUP_SCHEMAS, **(group_schemas or {})}.get(group)
        if schema is not None and location.startswith("data.cleaning."):
            schema = CleaningSchema
    if schema is None or not is_dataclass(schema):
        return None
    valid = [f.name for f in fields(schema)]
    close = difflib.get_close_matches(bad_key, valid, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return f"unknown config key '{location}'.{hint} Valid keys here: {', '.join(valid)}."

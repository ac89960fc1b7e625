"""MLM loss, accuracy and perplexity (and NSP accuracy) of any encoder on any corpus, on fixed masks.

    python -m bert_lm.evaluate <run dir | .ckpt | HF dir> --data <path> [--source <format>]

Each step is the pretraining one, so a number here means what ``val/mlm_loss`` means:

* model: :func:`bert_lm.training.encoder_loading.resolve_source` (a run directory, one of our
  ``.ckpt`` files, our HF export or a published BERT / RoBERTa / ELECTRA directory, with
  its own tokenizer) and the whole pretraining model, MLM head included. An ELECTRA run is
  scored by its generator (its masked LM); a model without a trained MLM head (a bare
  encoder, an ELECTRA discriminator, a run with ``train.train_mlm=false``) is refused;
* corpus: the prepare step (cleaning, sentence splitting, duplicate documents) with every
  document in one split (``valid_ratio=0``), cached by content hash under ``cache/prepared``;
  read as ``--source`` (default: the format the evaluated run was pretrained on, else
  ``plain``), cleaned and split as the evaluated run was pretrained (its
  ``resolved_config.yaml``), else as the project's data config for that source;
* examples and masks: the token cache, then the construction of the pretraining
  *validation* loader (``PretrainingDataModule``): one fixed plan in corpus order and
  masks drawn per batch from ``--seed``. Masks depend on the token ids, ``--max-len``,
  ``--batch-size``, the mask settings and the seed, never on the model, so two models
  with the same tokenizer are scored on the same masked positions (``mask_digest``, a
  hash of every masked batch, says so). The mask settings are therefore the flags' (the
  pretraining defaults), not each run's: a note names the run's settings that differ. With
  the run's own settings (its seed, batch size, mask flags; max_len is the run's already) on
  its prepared ``valid.txt``, the MLM loss is the run's ``val/mlm_loss``;
* metrics: ``mlm_loss`` is the mean cross-entropy over all masked tokens (the
  pretraining module weights each batch's mean by its masked-token count),
  ``perplexity = exp(mlm_loss)`` (capped at exp(50) as in pretraining), ``mlm_acc`` the
  share of masked tokens whose argmax is the original token. Examples are NSP pairs,
  and ``nsp_loss`` / ``nsp_acc`` are reported, when the model's NSP head was trained
  (our runs with ``train.train_nsp``, a published ``BertForPreTraining``); ``--no-nsp``
  scores single-segment spans instead, which is what to use when comparing with a model
  without NSP (RoBERTa, ELECTRA, ``train_nsp=false``): the layout decides the masks.

The result is an MLflow run in the experiment ``bert-lm-evaluation`` (params: the
settings above; tags ``evaluated_model`` and, for our runs, ``evaluated_run_id``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from bert_lm.config.hydra_setup import CONFIG_DIR, PROJECT_ROOT
from bert_lm.config.schema import CleaningSchema, DataSchema
from bert_lm.corpus import formats
from bert_lm.corpus.prepare import (
    TRAIN_FILE,
    VALID_FILE,
    PrepareSettings,
    is_prepared,
)
from bert_lm.corpus.readers import READERS
from bert_lm.data.datamodule import ShardedEpochSampler
from bert_lm.data.masking import MlmMasker, PretrainingCollator
from bert_lm.data.pretraining_examples import PretrainingDataset, mix_seed
from bert_lm.data.token_cache import build_token_cache
from bert_lm.models.bert import BertForPreTraining
from bert_lm.tokenizer.loading import load_tokenizer
from bert_lm.tracking import DEFAULT_TRACKING_URI, MLFLOW_RUN_ID_FILE, ensure_experiment
from bert_lm.training.corpus_pipeline import ensure_prepared_corpus
from bert_lm.training.encoder_loading import load_pretrained_model, masked_lm_source, pooler_was_trained
from bert_lm.training.pretraining_run import warn_on_unknown_tokens
from bert_lm.training.run_support import HF_EXPORT_DIR, RUN_CONFIG_FILES, run_configs, run_dir_of

log = logging.getLogger(__name__)

EXPERIMENT_NAME = "bert-lm-evaluation"
DEFAULT_CACHE_DIR = PROJECT_ROOT / "cache"
# exp() of a larger loss overflows; the pretraining module caps it the same way.
MAX_LOG_PERPLEXITY = 50.0
# Every format the prepare step reads: text files and records (jsonl, csv, ...).
SOURCES = sorted({*READERS, *formats.READERS})


@dataclass(frozen=True)
class EvaluationSettings:
    """What decides the examples and their masks (defaults: the pretraining data defaults)."""

    max_len: int | None = None  # None: the run's data.max_len, else min(128, the model's positions)
    batch_size: int = DataSchema.batch_size
    mask_ratio: float = DataSchema.mask_ratio
    mask_token_prob: float = DataSchema.mask_token_prob
    random_token_prob: float = DataSchema.random_token_prob
    whole_word_mask: bool = DataSchema.whole_word_mask
    pack_documents: bool = DataSchema.pack_documents  # spans filled from consecutive documents (no NSP)
    short_seq_prob: float = DataSchema.short_seq_prob
    nsp_prob: float = DataSchema.nsp_prob
    pad_to_multiple_of: int | None = None  # the padded length changes the mask draws: keep the run's
    seed: int = 0
    nsp: bool | None = None  # None: NSP pairs when the model's NSP head was trained
    max_batches: int | None = None


@dataclass
class Evaluation:
    metrics: dict[str, float]
    params: dict[str, str]
    mask_digest: str  # sha256 of every batch's masked input ids and labels
    model_path: Path
    evaluated_run_id: str | None = None
    tags: dict[str, str] = field(default_factory=dict)


# ----------------------------------------------------------------------------- the model
def find_run_dir(model_path: Path) -> Path | None:
    """The pretraining run directory a model path belongs to (run dir, its .ckpt or its hf_export)."""
    if model_path.is_file() or model_path.suffix == ".ckpt":
        candidate = run_dir_of(model_path)
    elif model_path.name == HF_EXPORT_DIR:
        candidate = model_path.parent
    elif model_path.parent.name == HF_EXPORT_DIR:  # an ELECTRA run's hf_export/generator (or discriminator)
        candidate = model_path.parent.parent
    else:
        candidate = model_path
    markers = (MLFLOW_RUN_ID_FILE, *RUN_CONFIG_FILES)
    return candidate if any((candidate / name).is_file() for name in markers) else None


def run_config(run_dir: Path | None) -> tuple[DictConfig | None, Path | None]:
    """The run's config (with a ``data`` node) and the file it came from (None, None without one)."""
    if run_dir is None:
        return None, None
    return next(((config, path) for config, path in run_configs(run_dir) if "data" in config), (None, None))


def is_prepared_split(data: Path) -> bool:
    """Whether ``data`` is the train or valid file of a prepared corpus (``cache/prepared/<name>/``)."""
    return data.is_file() and data.name in (TRAIN_FILE, VALID_FILE) and is_prepared(data.parent)


def load_model(model_path: Path, tokenizer_dir: str | Path | None) -> tuple[BertForPreTraining, Path, bool]:
    """(model in eval mode, its tokenizer directory, whether its NSP head was trained); refuses a
    model whose MLM head is missing or untrained."""
    model, resolved_tokenizer_dir = load_pretrained_model(model_path, tokenizer_dir, require_mlm=True)
    return model.eval(), resolved_tokenizer_dir, pooler_was_trained(model_path, tokenizer_dir)


# The data settings that decide the masks (the same names in the run's data config and EvaluationSettings).
RUN_MASK_SETTINGS = (
    "mask_ratio",
    "mask_token_prob",
    "random_token_prob",
    "whole_word_mask",
    "pack_documents",
    "batch_size",
)


def mask_settings_differing_from_run(settings: EvaluationSettings, run_config: DictConfig | None) -> list[str]:
    """``<key>=<run's value>`` for each setting that decides the masks which the run trained with and this
    evaluation does not use (the run's data settings, its seed and its padding multiple)."""
    if run_config is None:
        return []
    data, impl = run_config.get("data") or {}, run_config.get("impl") or {}
    run_values = {f"data.{key}": (key, data.get(key)) for key in RUN_MASK_SETTINGS}
    run_values["seed"] = ("seed", run_config.get("seed"))
    run_values["impl.pad_to_multiple_of"] = ("pad_to_multiple_of", impl.get("pad_to_multiple_of"))
    differing = []
    for key, (field_name, run_value) in run_values.items():
        if key == "impl.pad_to_multiple_of" and run_value is None:
            continue  # the run padded to the batch's longest example, as the default here
        if run_value is not None and not isinstance(run_value, str) and run_value != getattr(settings, field_name):
            differing.append(f"{key}={run_value}")
    return differing


# ---------------------------------------------------------------------------- the corpus
def project_data_defaults(source: str) -> DictConfig:
    """The data settings of the project's config for ``source`` (conf/data/*.yaml), schema defaults if none."""
    defaults = OmegaConf.structured(DataSchema)
    for path in sorted((CONFIG_DIR / "data").glob("*.yaml")):
        group = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        if group.get("source") == source:
            # root interpolates paths.root_dir, and --data replaces it anyway.
            return OmegaConf.merge(defaults, {k: v for k, v in group.items() if k not in ("defaults", "root")})
    return defaults


def prepare_evaluation_corpus(data_cfg: DictConfig, cache_dir: Path, show_progress: bool = True) -> Path:
    """The prepared corpus for ``data_cfg`` under ``cache_dir/prepared`` (the whole corpus as one split)."""
    return ensure_prepared_corpus(data_cfg, cache_dir, show_progress=show_progress, require_valid_split=False)


def corpus_config(
    data: Path,
    source: str,
    run_data: DictConfig | None,
    split_sentences: bool | None = None,
    reader_options: dict[str, str | None] | None = None,
) -> DictConfig:
    """A ``data`` node for :func:`prepare_evaluation_corpus`: the whole corpus as one split, every other
    prepare setting (cleaning included) from the run, else from the project's data config for ``source``.

    ``reader_options`` (``file_pattern``, ``text_field``, ``text_column``, ``on_decode_error``): None takes
    the run's when it read the same format, else the default."""
    base = run_data if run_data is not None else project_data_defaults(source)
    chosen = {"source": source, "root": str(data), "valid_ratio": 0.0}  # every document lands in train.txt
    for name, value in (reader_options or {}).items():
        if value is None and base.get("source") != source:
            value = PrepareSettings.__dataclass_fields__[name].default
        if value is not None:
            chosen[name] = value
    if split_sentences is not None:
        chosen["split_sentences"] = split_sentences
    values = {}
    try:
        for name, spec in PrepareSettings.__dataclass_fields__.items():
            if name not in chosen:
                values[name] = base[name] if name in base else spec.default
        cleaning = OmegaConf.merge(OmegaConf.structured(CleaningSchema), base.cleaning)
        cleaning = OmegaConf.to_container(cleaning, resolve=True)
    except OmegaConfBaseException as err:  # Hydra's own copy of a run's config may hold interpolations
        raise ValueError(f"cannot read the run's data settings: {err}") from None
    return OmegaConf.create({**values, **chosen, "download": False, "cleaning": cleaning})


# ---------------------------------------------------------------- examples, masks, scores
def evaluation_loader(
    corpus_file: Path, tokenizer, cache_dir: Path, settings: EvaluationSettings, max_len: int, nsp: bool
) -> DataLoader:
    """The pretraining validation loader over ``corpus_file``: built as
    ``PretrainingDataModule._datasets`` / ``setup`` / ``val_dataloader`` build the valid
    split's, so that the same settings give the same examples and masks."""
    token_dir = cache_dir / "tokens"
    cache = build_token_cache(corpus_file, tokenizer, token_dir, max_sentence_tokens=max(512, max_len))
    validation_seed = mix_seed(settings.seed, 1)
    try:
        dataset = PretrainingDataset(
            cache,
            token_dir / "plans",
            max_len=max_len,
            train_nsp=nsp,
            pack_documents=settings.pack_documents,
            short_seq_prob=settings.short_seq_prob,
            nsp_prob=settings.nsp_prob,
            seed=validation_seed,
            cls_id=tokenizer.cls_id,
            sep_id=tokenizer.sep_id,
            shuffle=False,
            fixed_epoch=0,
        )
    except ValueError as err:
        hint = "; --no-nsp scores single-segment spans, which need no sentence pairs" if nsp else ""
        raise ValueError(f"{err}{hint}") from None
    masker = MlmMasker.for_tokenizer(
        tokenizer, settings.mask_ratio, settings.mask_token_prob, settings.random_token_prob, settings.whole_word_mask
    )
    collator = PretrainingCollator(masker, tokenizer.pad_id, validation_seed, settings.pad_to_multiple_of)
    sampler = ShardedEpochSampler(len(dataset), 1, 0, fixed_epoch=0)
    return DataLoader(dataset, batch_size=settings.batch_size, sampler=sampler, collate_fn=collator, drop_last=False)


@torch.inference_mode()
def score(
    model: BertForPreTraining,
    loader: DataLoader,
    nsp: bool,
    device: torch.device,
    max_batches: int | None = None,
    show_progress: bool = True,
) -> tuple[dict[str, float], str]:
    """(metrics, mask digest) over the loader's batches (the first ``max_batches``)."""
    model.to(device)
    digest = hashlib.sha256()
    loss_sum, correct, masked, examples = 0.0, 0, 0, 0
    nsp_loss_sum, nsp_correct = 0.0, 0
    total = len(loader) if max_batches is None else min(len(loader), max_batches)
    batches = (batch for _, batch in zip(range(total), loader, strict=False))
    for batch in tqdm(batches, total=total, desc="evaluate", unit="batch", disable=not show_progress):
        for key in ("input_ids", "mlm_labels"):  # what decides the masked positions and targets
            digest.update(json.dumps(list(batch[key].shape)).encode())
            digest.update(batch[key].numpy().tobytes())
        batch = {key: value.to(device) for key, value in batch.items()}
        out = model(
            batch["input_ids"],
            batch["token_type_ids"],
            batch["attention_mask"],
            mlm_labels=batch["mlm_labels"],
            nsp_labels=batch["nsp_labels"] if nsp else None,
        )
        count = int(out.mlm_count)
        if count:  # a batch without a masked token has no MLM loss to average
            loss_sum += float(out.mlm_loss) * count
            correct += int(out.mlm_correct)
            masked += count
        size = batch["input_ids"].size(0)
        examples += size
        if nsp:
            nsp_loss_sum += float(out.nsp_loss) * size
            nsp_correct += int((out.nsp_logits.argmax(dim=-1) == batch["nsp_labels"]).sum())
    if masked == 0:
        raise ValueError("no token was masked in the evaluated batches: raise --mask-ratio or use more data")
    mlm_loss = loss_sum / masked
    metrics = {"examples": examples, "masked_tokens": masked}
    if nsp:
        metrics |= {"nsp_loss": nsp_loss_sum / examples, "nsp_acc": nsp_correct / examples}
    metrics |= {
        "mlm_loss": mlm_loss,
        "perplexity": math.exp(min(mlm_loss, MAX_LOG_PERPLEXITY)),
        "mlm_acc": correct / masked,
    }
    return metrics, digest.hexdigest()


# --------------------------------------------------------------------------- the command
def evaluate(
    model_path: str | Path,
    data: str | Path,
    *,
    source: str | None = None,
    split_sentences: bool | None = None,
    file_pattern: str | None = None,
    text_field: str | None = None,
    text_column: str | None = None,
    on_decode_error: str | None = None,
    tokenizer_dir: str | Path | None = None,
    cache_dir: str | Path = DEFAULT_CACHE_DIR,
    settings: EvaluationSettings | None = None,
    device: str | None = None,
    show_progress: bool = True,
) -> Evaluation:
    """Score ``model_path`` on the corpus at ``data``; see the module docstring."""
    settings = settings or EvaluationSettings()
    model_path, data = Path(model_path).expanduser().resolve(), Path(data).expanduser().resolve()
    if not model_path.exists():
        raise FileNotFoundError(
            f"model {model_path} does not exist: pass a pretraining run directory, a .ckpt file or an HF directory"
        )
    if not data.exists():
        raise FileNotFoundError(f"--data {data} does not exist: pass a corpus file or directory")
    cache_dir = Path(cache_dir)
    masked_lm = masked_lm_source(model_path)
    if masked_lm != model_path:
        print(
            f"model: {model_path} is an ELECTRA run; scoring its generator {masked_lm} (the discriminator has "
            "no MLM head)"
        )
        model_path = masked_lm

    run_dir = find_run_dir(model_path)
    run_cfg, run_config_file = run_config(run_dir)
    run_data = run_cfg.data if run_cfg is not None else None
    if source in (None, "plain") and is_prepared_split(data):
        # A prepared train.txt / valid.txt (a run's own split): cleaned, one sentence a line, [EOD] between
        # documents, whatever format the run read; splitting it again would cut a few lines further.
        source = "plain"
        split_sentences = False if split_sentences is None else split_sentences
        print(f"corpus: {data} is a prepared split: --source plain --no-split-sentences")
    elif source is None:
        # The format the run was pretrained on (its held-out data is most likely in it), else plain text.
        run_source = run_data.get("source") if run_data is not None else None
        source = run_source if isinstance(run_source, str) and run_source in SOURCES else "plain"
    if source not in SOURCES:
        raise ValueError(f"--source={source!r}: use one of {SOURCES}")
    model, tokenizer_path, nsp_trained = load_model(model_path, tokenizer_dir)
    nsp = nsp_trained if settings.nsp is None else settings.nsp
    if nsp and not nsp_trained:
        raise ValueError(f"--nsp: {model_path} has no trained NSP head (its pretraining did not use NSP)")
    if nsp and settings.pack_documents:
        raise ValueError("--pack-documents mixes documents in a span, so it cannot score NSP pairs: add --no-nsp")
    limit = model.config.max_sequence_length
    max_len = settings.max_len
    if max_len is None:
        run_max_len = run_data.get("max_len") if run_data is not None else None
        max_len = int(run_max_len) if isinstance(run_max_len, int) else min(128, limit)
    if not 5 <= max_len <= limit:
        raise ValueError(f"--max-len={max_len}: {model_path} reads between 5 and {limit} tokens (its positions)")
    layout = (
        "NSP pairs (--no-nsp: spans, as models without NSP are scored)"
        if nsp
        else "spans packed from consecutive documents"
        if settings.pack_documents
        else "single-segment spans"
    )
    print(f"model: {model_path} (tokenizer {tokenizer_path}; {layout}, max_len {max_len})")
    differing = mask_settings_differing_from_run(settings, run_cfg)
    if differing:
        # Not taken over: every model evaluated with the same flags gets the same masks, runs or not.
        print(
            f"note: the run trained with {', '.join(differing)}; these masks use the flags' settings, so the "
            "figures differ from its val/ metrics (pass the run's settings as flags to reproduce them)"
        )

    reader_options = {
        "file_pattern": file_pattern,
        "text_field": text_field,
        "text_column": text_column,
        "on_decode_error": on_decode_error,
    }
    data_cfg = corpus_config(data, source, run_data, split_sentences, reader_options)
    print(
        f"corpus: {data} (source={source}, split_sentences={data_cfg.split_sentences}, cleaning and splitting "
        f"from {run_config_file or f'the project data config for source={source}'})"
    )
    prepared_dir = prepare_evaluation_corpus(data_cfg, cache_dir, show_progress=show_progress)
    tokenizer = load_tokenizer(tokenizer_path)
    try:
        warn_on_unknown_tokens(tokenizer, prepared_dir)
        loader = evaluation_loader(prepared_dir / TRAIN_FILE, tokenizer, cache_dir, settings, max_len, nsp)
    finally:
        tokenizer.close()
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    metrics, mask_digest = score(model, loader, nsp, device, settings.max_batches, show_progress)

    run_id_file = run_dir / MLFLOW_RUN_ID_FILE if run_dir is not None else None
    evaluated_run_id = run_id_file.read_text().strip() if run_id_file and run_id_file.is_file() else None
    params = {
        "model": str(model_path),
        "tokenizer": str(tokenizer_path),
        "data": str(data),
        "prepared_corpus": str(prepared_dir),
        **{key: str(data_cfg[key]) for key in ("source", "split_sentences", *reader_options)},
        "cleaning": json.dumps(OmegaConf.to_container(data_cfg.cleaning), sort_keys=True),
        **{key: str(value) for key, value in asdict(settings).items()},
        "max_len": str(max_len),
        "nsp": str(nsp),
        "mask_digest": mask_digest,
    }
    tags = {"evaluated_model": str(model_path)}
    if evaluated_run_id:
        tags["evaluated_run_id"] = evaluated_run_id
    return Evaluation(metrics, params, mask_digest, model_path, evaluated_run_id, tags)


def log_evaluation(evaluation: Evaluation, tracking_uri: str = DEFAULT_TRACKING_URI) -> str:
    """Record the evaluation as a finished MLflow run in ``bert-lm-evaluation``; returns its run id."""
    client = MlflowClient(tracking_uri)
    experiment_id = ensure_experiment(client, EXPERIMENT_NAME, tracking_uri)
    model = evaluation.model_path
    run_name = f"{model.parent.name}/{model.name} on {Path(evaluation.params['data']).name}"
    run = client.create_run(experiment_id, run_name=run_name, tags=evaluation.tags)
    now = int(time.time() * 1000)
    client.log_batch(
        run.info.run_id,
        metrics=[Metric(key, float(value), now, 0) for key, value in evaluation.metrics.items()],
        params=[Param(key, value) for key, value in evaluation.params.items()],
    )
    client.set_terminated(run.info.run_id)
    return run.info.run_id


# The corpus readers and loaders name run.py's config keys (data.text_field=...); here the same
# settings are flags. Messages are shown in this command's terms.
FLAG_OF_CONFIG_KEY = {
    "data.root": "--data",
    "data.source": "--source",
    "data.file_pattern": "--file-pattern",
    "data.text_field": "--text-field",
    "data.text_column": "--text-column",
    "data.on_decode_error": "--on-decode-error",
    "data.split_sentences": "--split-sentences",
}


def in_flag_names(message: str) -> str:
    """``message`` with the config keys of :data:`FLAG_OF_CONFIG_KEY` written as this command's flags."""
    pattern = "|".join(re.escape(key) for key in FLAG_OF_CONFIG_KEY)
    return re.sub(rf"\b({pattern})\b", lambda match: FLAG_OF_CONFIG_KEY[match.group(1)], message)


def build_parser() -> argparse.ArgumentParser:
    defaults = EvaluationSettings()
    parser = argparse.ArgumentParser(
        prog="python -m bert_lm.evaluate",
        description="MLM loss, accuracy and perplexity (and NSP accuracy) of a pretrained model on a corpus, "
        "on masks drawn from a fixed seed.",
    )
    parser.add_argument("model", help="pretraining run directory, .ckpt file or HF directory (ours or published)")
    parser.add_argument("--data", required=True, help="corpus file or directory")
    parser.add_argument(
        "--source", default=None, choices=SOURCES, help="corpus format (default: the run's data.source, else plain)"
    )
    parser.add_argument(
        "--file-pattern", default=None, help="files of a --data directory to read (default: the run's, else *)"
    )
    parser.add_argument("--text-field", default=None, help="jsonl: the field holding the text (default: text)")
    parser.add_argument("--text-column", default=None, help="csv/tsv/parquet/datasets: the text column (default: text)")
    parser.add_argument(
        "--on-decode-error",
        default=None,
        choices=("raise", "skip"),
        help="a line (row) that is not UTF-8: stop naming it, or skip and count it (default: the run's, else raise)",
    )
    parser.add_argument(
        "--split-sentences",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="cut blocks into sentences (default: as the run was pretrained, else the project's data config)",
    )
    parser.add_argument("--tokenizer", default=None, help="tokenizer directory (default: the model's own)")
    parser.add_argument("--cache-dir", default=str(DEFAULT_CACHE_DIR), help="prepared corpora and token caches")
    parser.add_argument("--max-len", type=int, default=None, help="default: the run's, else min(128, positions)")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--mask-ratio", type=float, default=defaults.mask_ratio)
    parser.add_argument(
        "--mask-token-prob",
        type=float,
        default=defaults.mask_token_prob,
        help="share of masked positions shown as [MASK]",
    )
    parser.add_argument(
        "--random-token-prob",
        type=float,
        default=defaults.random_token_prob,
        help="share of masked positions shown as a random token",
    )
    parser.add_argument("--whole-word-mask", action="store_true", help="mask whole words (## pieces with their word)")
    parser.add_argument(
        "--pack-documents",
        action="store_true",
        help="fill each span from consecutive documents, [SEP] between them (as data.pack_documents=true; needs --no-nsp)",
    )
    parser.add_argument("--pad-to-multiple-of", type=int, default=None, help="as the run's impl.pad_to_multiple_of")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seed of the example plan and the masks")
    parser.add_argument(
        "--nsp",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="NSP pairs and NSP accuracy (default: when the model's NSP head was trained)",
    )
    parser.add_argument("--max-batches", type=int, default=None, help="evaluate the first N batches only")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--tracking-uri", default=DEFAULT_TRACKING_URI, help="MLflow store (default: the project's)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = EvaluationSettings(
        max_len=args.max_len,
        batch_size=args.batch_size,
        mask_ratio=args.mask_ratio,
        mask_token_prob=args.mask_token_prob,
        random_token_prob=args.random_token_prob,
        whole_word_mask=args.whole_word_mask,
        pack_documents=args.pack_documents,
        pad_to_multiple_of=args.pad_to_multiple_of,
        seed=args.seed,
        nsp=args.nsp,
        max_batches=args.max_batches,
    )
    try:
        if settings.batch_size < 1 or (settings.max_batches is not None and settings.max_batches < 1):
            raise ValueError("--batch-size and --max-batches must be at least 1")
        evaluation = evaluate(
            args.model,
            args.data,
            source=args.source,
            split_sentences=args.split_sentences,
            file_pattern=args.file_pattern,
            text_field=args.text_field,
            text_column=args.text_column,
            on_decode_error=args.on_decode_error,
            tokenizer_dir=args.tokenizer,
            cache_dir=args.cache_dir,
            settings=settings,
            device=args.device,
        )
        run_id = log_evaluation(evaluation, args.tracking_uri)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {in_flag_names(str(err))}", file=sys.stderr)
        return 1
    print(f"mlflow_run_id: {run_id} (experiment {EXPERIMENT_NAME}, {args.tracking_uri})")
    if evaluation.evaluated_run_id:
        print(f"evaluated_run_id: {evaluation.evaluated_run_id}")
    print(f"mask_digest: {evaluation.mask_digest}")
    for name, value in evaluation.metrics.items():  # mlm_loss, perplexity, mlm_acc last
        print(f"{name}: {value:.6f}" if isinstance(value, float) else f"{name}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

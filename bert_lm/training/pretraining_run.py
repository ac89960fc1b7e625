"""What ``run.py`` does, step by step, as functions that tests can call one by one.

checks -> prepared corpus -> tokenizer -> DataModule -> model -> Trainer -> fit ->
final validation -> HF export -> MLflow artifacts.
"""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from bert_lm.corpus.prepare import TRAIN_FILE
from bert_lm.data.datamodule import PretrainingDataModule
from bert_lm.models.bert import BertConfig
from bert_lm.models.hf_interop import export_electra, export_hf, import_hf, load_electra_pair, read_hf_config
from bert_lm.tokenizer.loading import is_tokenizer_dir, load_tokenizer
from bert_lm.training.budget import TrainingBudget
from bert_lm.training.corpus_pipeline import ensure_prepared_corpus, ensure_tokenizer
from bert_lm.training.electra_module import ElectraPretrainingModule
from bert_lm.training.pretraining_module import PretrainingModule
from bert_lm.training.run_support import (
    CHECKPOINT_DIR,
    HF_EXPORT_DIR,
    LAST_CHECKPOINT,
    ConfigError,
    build_logger,
    build_trainer,
    check_writable,
    keep_run_tokenizer,
    load_pretraining_weights,
    log_config_params,
    read_checkpoint,
    record_model_config,
    run_dir_of,
)
from bert_lm.training.strategies import check_strategy_runnable, consolidated_checkpoint

log = logging.getLogger(__name__)


def check_config(cfg: DictConfig) -> None:
    """Fail fast, naming the key, on settings that would only fail later."""
    if OmegaConf.is_missing(cfg.data, "root"):
        raise ConfigError(
            f"data.root is not set: data={cfg.data.name} needs the corpus path, e.g. data.root=/path/comments.txt"
        )
    if cfg.train.budget_minutes is not None:
        if not cfg.train.budget_minutes > 0:
            raise ConfigError(f"train.budget_minutes={cfg.train.budget_minutes}: must be > 0 (or null for steps)")
        if cfg.train.warmup_steps is not None:
            raise ConfigError(
                "train.warmup_steps is set together with train.budget_minutes: with a time budget, warmup is "
                "train.warmup_ratio of the budget; set train.warmup_steps=null"
            )
    if cfg.train.objective not in ("mlm", "electra"):
        raise ConfigError(f"train.objective={cfg.train.objective!r}: use mlm (with train_mlm/train_nsp) or electra")
    if cfg.train.objective == "electra" and cfg.init_from:
        missing = [h for h in ("discriminator", "generator") if not (Path(cfg.init_from) / h / "config.json").is_file()]
        if missing:
            raise ConfigError(
                f"train.objective=electra init_from={cfg.init_from}: continuing ELECTRA pretraining needs the pair, "
                f"{cfg.init_from}/discriminator/ and {cfg.init_from}/generator/ (the layout of our ELECTRA export; put "
                f"a published pair such as KoELECTRA's two directories there); missing: {', '.join(missing)}"
            )
    if not (cfg.train.train_mlm or cfg.train.train_nsp):
        raise ConfigError("train.train_mlm=false and train.train_nsp=false: enable at least one objective")
    if cfg.data.pack_documents and cfg.train.train_nsp and cfg.train.objective == "mlm":
        raise ConfigError(
            "data.pack_documents=true with train.train_nsp=true: a packed sequence mixes documents, so it cannot "
            "be a next-sentence pair; set train.train_nsp=false (or data.pack_documents=false)"
        )
    if cfg.init_from:
        try:
            model_config = read_hf_config(electra_part(cfg, "discriminator"))
        except (FileNotFoundError, ValueError) as err:
            raise ConfigError(f"init_from: {err}") from None
        where = f"init_from={cfg.init_from}"
    else:
        model_fields = OmegaConf.to_container(cfg.model, resolve=True)
        model_fields.pop("generator_size", None)  # ELECTRA's generator, not the encoder's shape
        if cfg.train.objective == "electra":
            if model_fields["model_type"] not in ("bert", "electra"):
                # transformers' ELECTRA is a post-LN BERT encoder: a RoBERTa offset or pre-LN
                # blocks could not be exported as ElectraForPreTraining, so say so, not drop them.
                raise ConfigError(
                    f"train.objective=electra: model.model_type={model_fields['model_type']} cannot be exported "
                    "as transformers' ELECTRA (post-LN BERT blocks); set model.model_type=electra, or use "
                    "experiment=small_budget_electra for the small-budget recipe"
                )
            model_fields["model_type"] = "electra"
        try:
            # vocab_size comes from the tokenizer later; any valid value checks the rest now.
            model_config = BertConfig(**{**model_fields, "vocab_size": max(model_fields["pad_token_id"] + 1, 8)})
        except ValueError as err:
            raise ConfigError(f"model: {err}") from None
        where = "the model group"
    if cfg.train.train_nsp and model_config.model_type != "bert" and cfg.train.objective == "mlm":
        raise ConfigError(
            f"train.train_nsp=true: {where} is a {model_config.model_type} model, which has no NSP head; "
            "set train.train_nsp=false"
        )
    if cfg.data.max_len > model_config.max_sequence_length:
        offset = f" - {model_config.position_offset} (RoBERTa's offset)" if model_config.position_offset else ""
        raise ConfigError(
            f"data.max_len={cfg.data.max_len} is above the {model_config.max_sequence_length} positions that "
            f"{where} allows (max_position_embeddings={model_config.max_position_embeddings}{offset}): "
            "lower data.max_len"
        )
    if cfg.data.max_len < 8:
        raise ConfigError(f"data.max_len={cfg.data.max_len}: must be at least 8")
    if cfg.data.valid_ratio <= 0:
        raise ConfigError(
            f"data.valid_ratio={cfg.data.valid_ratio}: pretraining needs a validation split (the checkpoints "
            "are chosen by val/mlm_loss); set data.valid_ratio above 0, e.g. data.valid_ratio=0.05"
        )
    check_strategy_runnable(cfg.strategy)


def resolve_resume(ckpt_path: str | None) -> tuple[Path | None, Path | None]:
    """(checkpoint file, run directory) for ``ckpt_path=<file or run dir>``.

    Lightning's ``ckpt_path="last"`` looks only in the checkpoint callback's folder
    and silently starts over when it finds nothing; here a resume request that
    finds no checkpoint is an error.
    """
    if not ckpt_path:
        return None, None
    path = Path(ckpt_path).expanduser().resolve()
    # A DeepSpeed checkpoint is a directory named *.ckpt: a checkpoint, not a run directory.
    if path.is_dir() and path.suffix != ".ckpt":
        candidate = path / CHECKPOINT_DIR / "last.ckpt"
        if not candidate.exists():
            raise FileNotFoundError(
                f"ckpt_path={path}: no {CHECKPOINT_DIR}/last.ckpt in this directory; pass a run directory "
                "printed as run_dir: by an earlier run, or a .ckpt file"
            )
        return candidate, path
    if path.exists():
        return path, run_dir_of(path)
    raise FileNotFoundError(f"ckpt_path={path} does not exist: pass a run directory or a .ckpt file")


# Settings that change what a model computes without changing its weights' shapes or names:
# a resume may change them (they are recorded as resume/<key> tags).
RESUMABLE_MODEL_KEYS = frozenset({"hidden_dropout_prob", "attention_probs_dropout_prob", "position_init"})


def check_resume_matches(module: pl.LightningModule, checkpoint: Path, run_dir: Path) -> None:
    """Refuse, before the run's MLflow record is touched, a resume whose model the checkpoint's
    weights do not fit: Lightning would fail inside ``fit`` with a size-mismatch traceback and
    leave the finished run marked FAILED. Names the settings that differ."""
    if not checkpoint.is_file():
        return  # a DeepSpeed checkpoint directory: converting it only to compare is not worth its cost
    try:
        state = read_checkpoint(checkpoint)
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError):
        return  # unreadable: Lightning's own load reports it
    saved = state.get("state_dict", {})
    ours = module.state_dict()
    if saved.keys() == ours.keys() and all(saved[k].shape == ours[k].shape for k in ours):
        return
    saved_hparams = state.get("hyper_parameters", {})
    differences = []
    saved_objective = "electra" if "disc_weight" in saved_hparams else "mlm"
    our_objective = "electra" if isinstance(module, ElectraPretrainingModule) else "mlm"
    if saved_objective != our_objective:
        differences.append(f"train.objective={saved_objective} (this run: {our_objective})")
    saved_model, our_model = saved_hparams.get("model_config", {}), module.hparams.get("model_config", {})
    for key in sorted(set(saved_model) | set(our_model)):
        if key not in RESUMABLE_MODEL_KEYS and saved_model.get(key) != our_model.get(key):
            differences.append(f"model.{key}={saved_model.get(key)!r} (this run: {our_model.get(key)!r})")
    if "generator_size" in saved_hparams and saved_hparams["generator_size"] != module.hparams.get("generator_size"):
        differences.append(
            f"model.generator_size={saved_hparams['generator_size']!r} (this run: {module.hparams.get('generator_size')!r})"
        )
    started_with = run_dir / ".hydra" / "overrides.yaml"
    hint = f"the overrides it was started with are in {started_with}" if started_with.is_file() else "its settings"
    raise ConfigError(
        f"ckpt_path={checkpoint}: its weights do not fit this run's model"
        + (f": it was trained with {', '.join(differences)}" if differences else "")
        + f". Resume with the settings the run was started with ({hint}), or start a new run without ckpt_path"
    )


def build_datamodule(cfg: DictConfig, prepared_dir: Path, tokenizer_dir: Path) -> PretrainingDataModule:
    return PretrainingDataModule(
        prepared_dir=str(prepared_dir),
        tokenizer_dir=str(tokenizer_dir),
        cache_dir=str(Path(cfg.paths.cache_dir) / "tokens"),
        max_len=cfg.data.max_len,
        batch_size=cfg.data.batch_size,
        num_workers=cfg.impl.num_workers,
        pin_memory=cfg.impl.pin_memory,
        persistent_workers=cfg.impl.persistent_workers,
        train_nsp=cfg.train.train_nsp and cfg.train.objective == "mlm",
        short_seq_prob=cfg.data.short_seq_prob,
        nsp_prob=cfg.data.nsp_prob,
        mask_ratio=cfg.data.mask_ratio,
        mask_token_prob=cfg.data.mask_token_prob,
        random_token_prob=cfg.data.random_token_prob,
        whole_word_mask=cfg.data.whole_word_mask,
        pack_documents=cfg.data.pack_documents,
        pad_to_multiple_of=cfg.impl.pad_to_multiple_of,
        seed=cfg.seed,
    )


# Dropout is a choice of the training, not of the architecture: with init_from it stays the model group's.
DROPOUT_KEYS = ("hidden_dropout_prob", "attention_probs_dropout_prob")


def build_module(cfg: DictConfig, tokenizer) -> PretrainingModule | ElectraPretrainingModule:
    model_config = {
        **OmegaConf.to_container(cfg.model, resolve=True),
        "vocab_size": tokenizer.vocab_size,
        "pad_token_id": tokenizer.pad_id,
    }
    generator_size = model_config.pop("generator_size", 0.25)
    train = OmegaConf.to_container(cfg.train, resolve=True)
    train.pop("budget_minutes", None)  # the Trainer's TrainingBudget callback carries it
    objective, disc_weight = train.pop("objective", "mlm"), train.pop("disc_weight", 50.0)
    if objective == "electra":
        # The discriminator is an ELECTRA encoder; replaced-token detection replaces NSP.
        train.pop("train_mlm"), train.pop("train_nsp")
        electra_config = {**model_config, "model_type": "electra"}
        if cfg.init_from:
            # A published (or our) pair: the architecture is the discriminator's, the generator's width its own.
            discriminator_config = read_hf_config(electra_part(cfg, "discriminator"))
            generator_hidden = read_hf_config(electra_part(cfg, "generator")).hidden_size
            electra_config = {
                **vars(discriminator_config),
                "vocab_size": tokenizer.vocab_size,
                **{key: model_config[key] for key in DROPOUT_KEYS},  # a choice of this training, as for MLM below
            }
            generator_size = generator_hidden / discriminator_config.hidden_size
        module = ElectraPretrainingModule(
            model_config=electra_config,
            special_ids=list(tokenizer.special_ids),
            generator_size=generator_size,
            disc_weight=disc_weight,
            optimizer=cfg.strategy.optimizer,
            **train,
        )
        if cfg.init_from:
            load_electra_pair(module.model, Path(cfg.init_from))
        return module
    if not cfg.init_from:
        return PretrainingModule(model_config=model_config, optimizer=cfg.strategy.optimizer, **train)
    imported = import_hf(cfg.init_from, expected_vocab_size=tokenizer.vocab_size)
    # The architecture is the checkpoint's; dropout is a choice of this training (the recipe's 0.0), so the
    # model group's. The module is built with that config from the start, so that its hyper-parameters
    # (what Lightning logs and checkpoints) describe the model that trains and the heads of a switched-off
    # objective are frozen on that model (DDP refuses parameters without gradients).
    trained_config = {**vars(imported.config), **{key: model_config[key] for key in DROPOUT_KEYS}}
    differing = [
        f"{key}={trained_config[key]!r}"
        for key in sorted(trained_config)
        if key not in ("position_init", "vocab_size", "pad_token_id") and trained_config[key] != model_config.get(key)
    ]
    if differing:
        log.warning(
            "init_from=%s: the checkpoint's architecture replaces the model group's: %s",
            cfg.init_from,
            ", ".join(differing),
        )
    module = PretrainingModule(model_config=trained_config, optimizer=cfg.strategy.optimizer, **train)
    module.model.load_state_dict(imported.state_dict())
    return module


def record_trained_model(cfg: DictConfig, module: pl.LightningModule) -> None:
    """With ``init_from`` the model group's architecture is replaced by the checkpoint's: write the
    model that trains into ``cfg.model``, so that MLflow's params and resolved_config.yaml say what ran."""
    trained = dict(module.hparams.model_config)
    if "generator_size" in module.hparams:
        trained["generator_size"] = module.hparams.generator_size
    record_model_config(cfg, trained)


def log_artifacts(
    logger, cfg: DictConfig, run_dir: Path, tokenizer_dir: Path, checkpoint: str | None, hf_dir: Path
) -> None:
    client, run_id = logger.experiment, logger.run_id
    resolved = run_dir / "resolved_config.yaml"
    OmegaConf.save(cfg, resolved, resolve=True)
    client.log_artifact(run_id, str(resolved))
    client.log_artifacts(run_id, str(tokenizer_dir), "tokenizer")
    if checkpoint:
        # The checkpoint the export holds, once: not every checkpoint Lightning wrote.
        client.log_artifact(run_id, checkpoint, "checkpoints")
    client.log_artifacts(run_id, str(hf_dir), HF_EXPORT_DIR)


def electra_part(cfg: DictConfig, part: str) -> Path:
    """``init_from`` itself, or its ``discriminator/`` / ``generator/`` half for ELECTRA pretraining."""
    return Path(cfg.init_from) / part if cfg.train.objective == "electra" else Path(cfg.init_from)


def pretraining_tokenizer(cfg: DictConfig, prepared_dir: Path) -> Path:
    """``tokenizer.dir`` when set; else the tokenizer that ``init_from`` was trained with (a published
    checkpoint's own files, or ours beside our export); else one trained on the corpus."""
    if cfg.init_from and not cfg.tokenizer.dir:
        source = electra_part(cfg, "discriminator")
        if not is_tokenizer_dir(source):
            raise ConfigError(
                f"init_from={source} holds no tokenizer (tokenizer.json or vocab.txt): set tokenizer.dir "
                "to the tokenizer the checkpoint was trained with"
            )
        tokenizer = load_tokenizer(source)
        print(f"tokenizer: {source} (the checkpoint's own, {tokenizer!r})")
        tokenizer.close()
        return source
    return ensure_tokenizer(cfg.tokenizer, prepared_dir, cfg.paths.cache_dir)


def warn_on_unknown_tokens(tokenizer, prepared_dir: Path, sample_lines: int = 2_000) -> None:
    """A published tokenizer on a new corpus: say so early when it maps much of it to [UNK]."""
    check = getattr(tokenizer, "check_unknown_rate", None)
    if check is None:
        return  # ours was trained on this corpus
    with open(prepared_dir / TRAIN_FILE, encoding="utf-8") as lines:
        sample = [line.strip() for _, line in zip(range(sample_lines), lines, strict=False)]
    check([line for line in sample if line and line != "[EOD]"])


def pretrain(cfg: DictConfig, overrides: list[str]) -> tuple[Path, Path]:
    """The whole job; returns (run directory, HF export directory)."""
    check_config(cfg)
    resume_ckpt, resume_dir = resolve_resume(cfg.ckpt_path)
    run_dir = resume_dir or Path(cfg.paths.output_dir)
    check_writable(run_dir, "paths.output_dir")
    check_writable(cfg.paths.cache_dir, "paths.cache_dir")
    torch.set_float32_matmul_precision(cfg.impl.matmul_precision)
    pl.seed_everything(cfg.seed, workers=True)

    prepared_dir = ensure_prepared_corpus(cfg.data, cfg.paths.cache_dir)
    tokenizer_dir = pretraining_tokenizer(cfg, prepared_dir)
    keep_run_tokenizer(tokenizer_dir, run_dir)  # for `python -m bert_lm.export` if the run stops early
    tokenizer = load_tokenizer(tokenizer_dir)
    warn_on_unknown_tokens(tokenizer, prepared_dir)
    datamodule = build_datamodule(cfg, prepared_dir, tokenizer_dir)
    module = build_module(cfg, tokenizer)
    if cfg.init_from:
        record_trained_model(cfg, module)
    if resume_ckpt is not None:
        check_resume_matches(module, resume_ckpt, run_dir)

    logger = build_logger(cfg, run_dir, overrides)
    log_config_params(logger, cfg, run_dir)
    budget = TrainingBudget(cfg.train.budget_minutes) if cfg.train.budget_minutes else None
    # With a time budget, the budget decides when to stop, not a step or epoch count.
    limits = {"max_steps": -1, "max_epochs": -1} if budget else {}
    if budget and isinstance(cfg.trainer.val_check_interval, int):
        # Validation every N steps across epoch ends (Lightning refuses N above one epoch otherwise).
        limits["check_val_every_n_epoch"] = None
    trainer = build_trainer(cfg, logger, run_dir / CHECKPOINT_DIR, [budget] if budget else None, **limits)
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(resume_ckpt) if resume_ckpt else None)
    if budget is not None:
        # Stopped mid-epoch at the budget: the final state is a checkpoint too (and the one to resume from),
        # so it keeps the optimizer, schedule and budget clock (weights_only=False, said rather than defaulted).
        trainer.save_checkpoint(run_dir / CHECKPOINT_DIR / "last.ckpt", weights_only=False)
        print(f"budget: {budget.elapsed_s / 60:.2f} of {budget.budget_s / 60:.2f} training minutes used")
    trainer.validate(module, datamodule=datamodule)

    best_ckpt = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    if cfg.train.objective == "electra":
        if best_ckpt:
            state = torch.load(consolidated_checkpoint(best_ckpt), map_location="cpu", weights_only=True)
            module.load_state_dict(state["state_dict"])
        discriminator_dir, _ = export_electra(module.model, run_dir / HF_EXPORT_DIR, tokenizer_dir)
        hf_dir = discriminator_dir.parent
    else:
        model = load_pretraining_weights(best_ckpt) if best_ckpt else module.model
        objectives = [name for name, on in (("mlm", cfg.train.train_mlm), ("nsp", cfg.train.train_nsp)) if on]
        hf_dir = export_hf(model, run_dir / HF_EXPORT_DIR, tokenizer_dir, objectives=objectives)
    if trainer.is_global_zero:
        # A run too short to validate while training has no best checkpoint: its export holds its final
        # weights, which last.ckpt holds too (a DeepSpeed directory of shards is not logged).
        last = run_dir / CHECKPOINT_DIR / LAST_CHECKPOINT
        logged_ckpt = best_ckpt or (str(last) if last.is_file() else None)
        log_artifacts(logger, cfg, run_dir, tokenizer_dir, logged_ckpt, hf_dir)
    tokenizer.close()
    return run_dir, hf_dir


def describe_environment() -> str:
    return f"torch {torch.__version__}, {os.cpu_count()} cpus, cuda={torch.cuda.is_available()}"

"""What every training job shares, pretraining and finetuning alike: run-directory
names, output checks, the MLflow logger, the Trainer with the configured callbacks
and strategy, config params in MLflow, and loading weights from our checkpoints.

Lives apart from :mod:`bert_lm.training.pretraining_run` so that finetuning needs
nothing from the pretraining orchestrator.
"""

from __future__ import annotations

import contextlib
import filecmp
import logging
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import hydra
import pytorch_lightning as pl
import torch
from filelock import FileLock
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.utilities import rank_zero_only

from bert_lm.config.hydra_setup import PROJECT_ROOT
from bert_lm.corpus.petitions_download import DownloadError
from bert_lm.corpus.prepare import private_temporary, publish_directory
from bert_lm.models.bert import BertConfig, BertForPreTraining
from bert_lm.models.hf_interop import TOKENIZER_FILES, copy_tokenizer_files
from bert_lm.tokenizer.loading import is_tokenizer_dir
from bert_lm.tracking import MLFLOW_RUN_ID_FILE
from bert_lm.training.strategies import StrategyUnavailableError, build_strategy, consolidated_checkpoint

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
HF_EXPORT_DIR = "hf_export"
LAST_CHECKPOINT = "last.ckpt"
# The run's tokenizer, copied in before training: a run stopped before its export still has it
# beside its checkpoints (for `python -m bert_lm.export`, finetuning and evaluate).
RUN_TOKENIZER_DIR = "tokenizer"


class ConfigError(ValueError):
    """A setting that cannot work, found before any data work."""


# Where a run directory keeps its composed config: the resolved one the run writes at its end, else
# Hydra's own (unresolved) copy from its start.
RUN_CONFIG_FILES = ("resolved_config.yaml", ".hydra/config.yaml")


def run_configs(run_dir: Path) -> Iterator[tuple[DictConfig, Path]]:
    """``(config, file)`` for each of :data:`RUN_CONFIG_FILES` that ``run_dir`` holds, in that order."""
    for name in RUN_CONFIG_FILES:
        path = run_dir / name
        if path.is_file():
            yield OmegaConf.load(path), path


def record_model_config(cfg: DictConfig, model_config: dict) -> None:
    """Write the architecture that actually trains (a checkpoint's, with ``init_from`` or ``pretrained``)
    into ``cfg.model``, so that MLflow's ``model/*`` params and resolved_config.yaml say what ran."""
    with open_dict(cfg.model):
        for key, value in model_config.items():
            if key in cfg.model:
                cfg.model[key] = value


# Bad input and impossible settings: our code raises these with a message that names the file,
# line or key and what to do, so the traceback adds nothing.
USER_ERRORS = (ValueError, FileNotFoundError, FloatingPointError, DownloadError, StrategyUnavailableError)
DEBUG_ENV = "BERT_LM_DEBUG"


@contextlib.contextmanager
def user_errors_reported():
    """For a job's entry point: a user error ends the process with one ``error: ...`` line and
    exit status 1 (``BERT_LM_DEBUG=1``: the traceback instead); anything else propagates."""
    try:
        yield
    except USER_ERRORS as err:
        if os.environ.get(DEBUG_ENV):
            raise
        print(f"error: {err}\n(set {DEBUG_ENV}=1 for the traceback)", file=sys.stderr)
        sys.exit(1)


def check_writable(directory: str | Path, key: str) -> None:
    """An unwritable output directory is reported before hours of training, not after."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        # A name of its own: jobs sharing a cache check it at the same moment, and one job's
        # unlink of a shared probe file made the other's fail.
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".write_test."):
            pass
    except OSError as err:
        raise ConfigError(f"{key}={directory} is not writable ({err.strerror}): choose another directory") from None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


# Overrides that say where things go, not what is trained: left out of run names.
_NOT_IN_RUN_NAME = ("ckpt_path", "paths.", "logger.", "hydra.", "callbacks.", "trainer.enable_progress_bar")


def build_logger(cfg: DictConfig, run_dir: Path, overrides: list[str]):
    """MLflow logger; a resumed run continues the MLflow run it started."""
    run_id_file = run_dir / MLFLOW_RUN_ID_FILE
    run_id = run_id_file.read_text().strip() if run_id_file.is_file() else None
    run_name = (
        cfg.logger.get("run_name")
        or ",".join(o for o in overrides if not o.lstrip("+~").startswith(_NOT_IN_RUN_NAME))
        or "defaults"
    )
    tags = {"mlflow.source.git.commit": _git_commit() or "unknown", "run_dir": str(run_dir)}
    # The logger opens the store (schema migrations on a new file); reading run_id creates the
    # experiment and the run: two jobs starting together on a fresh store would race on each.
    with tracking_store_lock(cfg.logger.tracking_uri):
        logger = hydra.utils.instantiate(cfg.logger, run_name=run_name, run_id=run_id, tags=tags)
        if rank_zero_only.rank == 0:  # other DDP ranks hold a dummy experiment
            run_id_file.write_text(logger.run_id)
    return logger


def tracking_store_lock(tracking_uri: str):
    """A file lock beside a local SQLite store; servers and other stores serialise themselves.

    MLflow migrates a new SQLite file and creates a missing experiment without a lock of its
    own, so a parallel multirun on a fresh ``mlflow.db`` used to fail with "duplicate column".
    """
    prefix = "sqlite:///"
    if not str(tracking_uri).startswith(prefix):
        return contextlib.nullcontext()
    return FileLock(f"{str(tracking_uri)[len(prefix) :]}.lock")


def build_trainer(
    cfg: DictConfig, logger, checkpoint_dir: Path, extra_callbacks: list | None = None, **trainer_overrides
) -> pl.Trainer:
    callbacks = list(extra_callbacks or [])
    for name, callback_cfg in cfg.callbacks.items():
        if name == "progress_bar" and not cfg.trainer.enable_progress_bar:
            continue  # Lightning refuses a progress-bar callback when the bar is off
        overrides = {"dirpath": str(checkpoint_dir)} if name == "model_checkpoint" else {}
        callbacks.append(hydra.utils.instantiate(callback_cfg, **overrides))
    trainer = hydra.utils.instantiate(
        cfg.trainer, logger=logger, callbacks=callbacks, strategy=build_strategy(cfg.strategy), **trainer_overrides
    )
    warn_if_bf16_is_emulated(trainer)
    return trainer


def cpu_has_bf16_matrix_units() -> bool:
    """AMX tiles: what makes bf16 matrix products fast on a CPU (torch has only a private probe)."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(probe()) if probe is not None else True  # unknown: do not warn


def warn_if_bf16_is_emulated(trainer: pl.Trainer) -> None:
    """bf16 autocast on a CPU without AMX runs emulated: measured 2.9x slower than fp32 on
    ``model=small`` here (0.50 against 1.44 steps/s), so say so rather than let a time budget
    buy a third of the steps."""
    on_cpu = isinstance(trainer.accelerator, pl.accelerators.CPUAccelerator)
    if on_cpu and str(trainer.precision).startswith("bf16") and not cpu_has_bf16_matrix_units():
        log.warning(
            "impl.precision=%s on a CPU without AMX: bf16 matrix products are emulated there, about 3x slower "
            "than impl.precision=32 (use bf16 on CPUs with AMX, or on GPUs)",
            trainer.precision,
        )


def read_checkpoint(checkpoint: str | Path) -> dict:
    """One of our checkpoints as plain containers (weights_only), memory-mapped when it can be, so
    that reading its hyper-parameters or callback state does not read its weights (a checkpoint
    saved in torch's legacy format cannot be mapped and is read whole)."""
    path = consolidated_checkpoint(checkpoint)
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as err:
        if "mmap" not in str(err):
            raise
        return torch.load(path, map_location="cpu", weights_only=True)


def run_dir_of(checkpoint: Path) -> Path:
    """``<run>`` for ``<run>/checkpoints/x.ckpt``; the checkpoint's folder otherwise."""
    return checkpoint.parent.parent if checkpoint.parent.name == CHECKPOINT_DIR else checkpoint.parent


def best_checkpoint(run_dir: Path) -> tuple[Path, str]:
    """``(checkpoint, why)``: the checkpoint a run's encoder is taken from when it has no export,
    the one ``run.py`` exports: the best its ``ModelCheckpoint`` recorded in ``last.ckpt`` (looked
    up by name in ``checkpoints/``, so a moved run still finds it), else ``last.ckpt`` itself."""
    last = run_dir / CHECKPOINT_DIR / LAST_CHECKPOINT
    if not last.exists():
        raise FileNotFoundError(
            f"{run_dir}: no {CHECKPOINT_DIR}/{LAST_CHECKPOINT}: expected a run.py run directory (run_dir: in its "
            "output) or a .ckpt file"
        )
    try:
        state = read_checkpoint(last)
    except (RuntimeError, pickle.UnpicklingError, EOFError) as err:
        return last, f"its callback state is unreadable ({type(err).__name__})"  # loading it will say more
    callbacks = state.get("callbacks", {}) if isinstance(state, dict) else {}
    for key, callback in callbacks.items():
        if key.startswith("ModelCheckpoint") and callback.get("best_model_path"):
            best = run_dir / CHECKPOINT_DIR / Path(callback["best_model_path"]).name
            if best.exists():
                return best, f"the best by {callback.get('monitor')}"
            return last, f"the recorded best, {best.name}, is gone"
    return last, "no validation recorded a best"


def keep_run_tokenizer(tokenizer_dir: str | Path, run_dir: Path) -> Path:
    """Copy the tokenizer's files into ``<run>/tokenizer/`` (once: a resumed run, or every DDP
    process, finds it in place; a different one there is refused). Published atomically, so a
    reader never sees half of it."""
    kept = run_dir / RUN_TOKENIZER_DIR
    if is_tokenizer_dir(kept):
        changed = [
            p.name
            for p in Path(tokenizer_dir).iterdir()
            if p.name in TOKENIZER_FILES and not ((kept / p.name).is_file() and filecmp.cmp(p, kept / p.name, False))
        ]
        if changed:
            # Checkpoints written with two tokenizers would export with the wrong one: refused, before training.
            raise ConfigError(
                f"{run_dir} was trained with the tokenizer kept in {kept}, which differs from {tokenizer_dir} in "
                f"{', '.join(changed)}: resume with tokenizer.dir={kept}, or start a new run directory"
            )
        return kept
    temporary = private_temporary(kept)
    try:
        temporary.mkdir(parents=True)
        copy_tokenizer_files(tokenizer_dir, temporary)
        publish_directory(temporary, kept, is_tokenizer_dir)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)  # gone already when published
    return kept


def load_pretraining_weights(checkpoint: str | Path) -> BertForPreTraining:
    """BertForPreTraining from one of our Lightning checkpoints (plain containers only)."""
    state = torch.load(consolidated_checkpoint(checkpoint), map_location="cpu", weights_only=True)
    model = BertForPreTraining(BertConfig(**state["hyper_parameters"]["model_config"]))
    weights = {k.removeprefix("model."): v for k, v in state["state_dict"].items() if k.startswith("model.")}
    model.load_state_dict(weights)
    return model


def _flatten(tree: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a/b": 1}: the key style MLFlowLogger uses for nested params."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}/"))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def log_config_params(logger, cfg: DictConfig, run_dir: Path | None = None) -> None:
    """The flattened config as MLflow params.

    MLflow refuses to change a logged param, and a resumed run continues its MLflow
    run: settings that differ on resume (max_steps, ckpt_path) are kept as
    ``resume/<key>`` tags instead (the latest resume's), so the history says what changed.
    A resume writes into ``run_dir``, the run it continues: the paths under the new,
    unused Hydra directory it was started in are no change worth a tag.
    """
    if rank_zero_only.rank != 0:
        return
    params = {k: str(v) for k, v in _flatten(OmegaConf.to_container(cfg, resolve=True)).items()}
    logged = logger.experiment.get_run(logger.run_id).data.params
    unused_dir = str(cfg.paths.output_dir) if run_dir is not None and Path(cfg.paths.output_dir) != run_dir else None
    changed = {
        k: v
        for k, v in params.items()
        if k in logged and logged[k] != v and not (unused_dir and v.startswith(unused_dir))
    }
    logger.log_hyperparams({k: v for k, v in params.items() if k not in logged})
    for key, value in changed.items():
        logger.experiment.set_tag(logger.run_id, f"resume/{key}", value[:5000])

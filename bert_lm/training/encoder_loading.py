"""Load a pretrained encoder (and find its tokenizer) from what pretraining leaves on disk.

Three kinds of source, told apart by what the path holds:

* **a pretraining run directory** (``run_dir:`` printed by ``run.py``): its
  ``hf_export/`` when present -- exported from the *best* checkpoint, with the
  tokenizer beside it -- else, for a run stopped before its export, the checkpoint that
  export would have held (the best its ``ModelCheckpoint`` recorded in ``last.ckpt``, else
  ``last.ckpt``; ``python -m bert_lm.export <run dir>`` writes the export itself), with the
  tokenizer ``run.py`` copied into ``<run dir>/tokenizer/`` before training;
* **a Lightning checkpoint** (``*.ckpt`` of ``run.py``; a DeepSpeed shard
  directory is consolidated first): weights from its ``state_dict``; the tokenizer from
  ``<run dir>/hf_export`` or ``<run dir>/tokenizer`` next to it (``<run dir>/checkpoints/x.ckpt``),
  or the explicit tokenizer directory;
* **an HF-format directory** (``config.json`` + ``model.safetensors`` or
  ``pytorch_model.bin``): our export, or a published BERT, RoBERTa or ELECTRA
  checkpoint (an ELECTRA discriminator's encoder is what finetuning takes); the
  tokenizer from the same directory, or the explicit one.

An explicit ``tokenizer_dir`` always wins. The tokenizer is ours
(``bert_lm_tokenizer.json`` beside ``tokenizer.json``) or the checkpoint's own
(``tokenizer.json``, or ``vocab.txt`` + ``tokenizer_config.json``; see
:func:`bert_lm.tokenizer.loading.load_tokenizer`), and its vocabulary must match
the encoder's embedding matrix. Nothing is executed from a checkpoint: ``.ckpt`` and ``.bin``
files are read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from bert_lm.models.bert import BertForPreTraining, BertModel
from bert_lm.models.hf_interop import (
    OBJECTIVES_KEY,
    UNTRAINED_MLM,
    import_hf,
    require_mlm_objective,
)
from bert_lm.tokenizer.loading import is_tokenizer_dir, load_tokenizer
from bert_lm.training.run_support import (
    CHECKPOINT_DIR,
    HF_EXPORT_DIR,
    LAST_CHECKPOINT,
    RUN_TOKENIZER_DIR,
    best_checkpoint,
    load_pretraining_weights,
    read_checkpoint,
    run_configs,
    run_dir_of,
)

HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_EXPECTED = (
    "expected a pretraining run directory (with hf_export/ or checkpoints/last.ckpt), a Lightning .ckpt "
    "file written by run.py, or an HF BERT directory (config.json + model.safetensors or pytorch_model.bin)"
)


@dataclass(frozen=True)
class EncoderSource:
    """Where the weights and the tokenizer of a source are; ``kind`` is
    ``hf`` (an HF-format directory) or ``ckpt`` (a Lightning checkpoint)."""

    kind: str
    weights: Path  # the HF directory or the .ckpt file
    tokenizer_dir: Path


def _is_hf_dir(directory: Path) -> bool:
    return (directory / "config.json").is_file() and any((directory / name).is_file() for name in HF_WEIGHT_FILES)


def _tokenizer_for(source: Path, candidates: list[Path], tokenizer_dir: str | os.PathLike | None) -> Path:
    if tokenizer_dir is not None:
        explicit = Path(tokenizer_dir).expanduser().resolve()
        if not is_tokenizer_dir(explicit):
            raise FileNotFoundError(
                f"tokenizer directory {explicit} holds no tokenizer.json or vocab.txt: expected ours (a pretraining "
                "run's hf_export/ or cache/tokenizers/<name>) or a published checkpoint's tokenizer files"
            )
        return explicit
    for candidate in candidates:
        if is_tokenizer_dir(candidate):
            return candidate
    looked = ", ".join(str(c) for c in candidates) or "nowhere"
    raise FileNotFoundError(
        f"{source}: no tokenizer found (looked in {looked} for tokenizer.json or vocab.txt); "
        "pass the tokenizer the encoder was pretrained with explicitly (run_finetune.py: tokenizer.dir=<dir>; "
        "evaluate and export: --tokenizer <dir>)"
    )


def _run_tokenizers(run_dir: Path) -> list[Path]:
    """Where a run keeps its tokenizer: its export, or the copy run.py makes before training."""
    return [run_dir / HF_EXPORT_DIR, run_dir / RUN_TOKENIZER_DIR]


def _refuse_finetuning_run(path: Path, run_dir: Path) -> None:
    """A finetuning run or checkpoint is not an encoder to pretrain, score or finetune from:
    say so, and name the encoder it was finetuned from, instead of a missing-tokenizer or
    not-a-BERT-checkpoint error that sends the user looking in the wrong place."""
    try:  # unresolved: a run's interpolations may not resolve here
        config, _ = next(run_configs(run_dir), (None, None))
        config = OmegaConf.to_container(config, resolve=False) if config is not None else None
    except Exception:  # noqa: BLE001 -- an unreadable config (YAML, OmegaConf or OS error): no hint, the usual errors follow
        return
    # A finetuning run's config has a ``task``; a pretraining run's has none.
    if not (isinstance(config, dict) and "task" in config and "finetune" in config):
        return
    task = config["task"].get("name", "?") if isinstance(config["task"], dict) else "?"
    encoder = config.get("pretrained") or "a randomly initialised one (pretrained= was not set)"
    raise ValueError(
        f"{path} is a finetuning run of run_finetune.py (task {task}), not a pretrained encoder: pass the "
        f"encoder it was finetuned from ({encoder}); its finetuned model predicts with "
        f"python -m finetune.predict {run_dir}"
    )


def resolve_source(source: str | os.PathLike, tokenizer_dir: str | os.PathLike | None = None) -> EncoderSource:
    """Decide what ``source`` is and where its weights and tokenizer are; raises
    ``FileNotFoundError``/``ValueError`` naming the path and what was expected."""
    path = Path(source).expanduser().resolve()
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: {_EXPECTED}")
    # A DeepSpeed checkpoint is a directory named *.ckpt (consolidated when loaded).
    if path.is_file() or path.suffix == ".ckpt":
        if path.suffix != ".ckpt":
            raise ValueError(f"{path} is a file but not a .ckpt: {_EXPECTED}")
        _refuse_finetuning_run(path, run_dir_of(path))
        return EncoderSource("ckpt", path, _tokenizer_for(path, _run_tokenizers(run_dir_of(path)), tokenizer_dir))
    _refuse_finetuning_run(path, path)  # before its checkpoints/ could pass for a stopped pretraining run's
    # An ELECTRA run exports two halves: finetuning takes the discriminator.
    if _is_hf_dir(path / HF_EXPORT_DIR / "discriminator"):
        export = path / HF_EXPORT_DIR / "discriminator"
        return EncoderSource("hf", export, _tokenizer_for(path, [export], tokenizer_dir))
    if (path / "discriminator").is_dir() and _is_hf_dir(path / "discriminator"):
        return EncoderSource(
            "hf", path / "discriminator", _tokenizer_for(path, [path / "discriminator"], tokenizer_dir)
        )
    if _is_hf_dir(path / HF_EXPORT_DIR):
        export = path / HF_EXPORT_DIR
        return EncoderSource("hf", export, _tokenizer_for(path, [export], tokenizer_dir))
    if (path / CHECKPOINT_DIR / LAST_CHECKPOINT).exists():
        # A run stopped before its export: the checkpoint its export would have held.
        checkpoint, _ = best_checkpoint(path)
        return EncoderSource("ckpt", checkpoint, _tokenizer_for(path, _run_tokenizers(path), tokenizer_dir))
    if _is_hf_dir(path):
        return EncoderSource("hf", path, _tokenizer_for(path, [path], tokenizer_dir))
    if (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} has config.json but no {' or '.join(HF_WEIGHT_FILES)}")
    raise FileNotFoundError(f"{path} holds none of hf_export/, {CHECKPOINT_DIR}/last.ckpt, config.json: {_EXPECTED}")


def pooler_was_trained(source: str | os.PathLike, tokenizer_dir: str | os.PathLike | None = None) -> bool:
    """Whether the source's pooler was trained (by NSP), so a classifier should read it:
    our checkpoints and exports say which objectives they trained; a published checkpoint
    saved as ``BertForPreTraining`` carries a trained NSP head."""
    resolved = resolve_source(source, tokenizer_dir)
    if resolved.kind == "ckpt":
        return bool(_checkpoint_hparams(resolved.weights).get("train_nsp", False))
    config = json.loads((resolved.weights / "config.json").read_text())
    if OBJECTIVES_KEY in config:
        return "nsp" in config[OBJECTIVES_KEY]
    return config.get("model_type", "bert") == "bert" and "BertForPreTraining" in config.get("architectures", [])


def masked_lm_source(source: str | os.PathLike) -> Path:
    """Where the masked LM of ``source`` is: an ELECTRA run (or its export) is scored and fills masks
    with its generator, its discriminator has no MLM head; anything else is its own masked LM."""
    path = Path(source).expanduser().resolve()
    for export in (path / HF_EXPORT_DIR, path):
        if _is_hf_dir(export / "generator") and (export / "discriminator").is_dir():
            return export / "generator"
    return path


def require_trained_mlm_head(resolved: EncoderSource) -> None:
    """Refuse a source whose MLM head is missing or untrained, before its weights are loaded: a
    ``.ckpt`` by its hyper-parameters (an ELECTRA one, or ``train.train_mlm=false``); an HF
    directory by our export's objectives (its weights' keys are checked as they load)."""
    if resolved.kind == "hf":
        require_mlm_objective(resolved.weights)
        return
    hparams = _checkpoint_hparams(resolved.weights)
    if "disc_weight" in hparams:  # ElectraPretrainingModule's
        raise ValueError(f"{resolved.weights} {ELECTRA_CHECKPOINT}")
    if not hparams.get("train_mlm", True):
        raise ValueError(f"{resolved.weights} {UNTRAINED_MLM}")


# An ELECTRA checkpoint holds the generator and the discriminator in one state_dict: the loaders
# here take one model, from the pair's export.
ELECTRA_CHECKPOINT = (
    "is an ELECTRA pretraining checkpoint (generator and discriminator): a run stopped before its export gets it "
    "with `python -m bert_lm.export <run dir or .ckpt>` (then <run>/hf_export/discriminator for finetuning, "
    "<run>/hf_export/generator for masks)"
)


def _checkpoint_hparams(checkpoint: Path) -> dict:
    """The hyper-parameters of one of our checkpoints; {} for a file that is not one."""
    try:
        state = read_checkpoint(checkpoint)
    except (RuntimeError, pickle.UnpicklingError, OSError, EOFError):
        return {}
    return state.get("hyper_parameters", {}) if isinstance(state, dict) else {}


def load_pretrained_model(
    source: str | os.PathLike,
    tokenizer_dir: str | os.PathLike | None = None,
    require_mlm: bool = False,
    encoder_only: bool = False,
) -> tuple[BertForPreTraining, Path]:
    """``(the whole pretrained model with its heads, tokenizer directory)`` for a run directory, a
    ``.ckpt`` or an HF directory (see the module docstring for which files are used), in train mode.
    ``require_mlm``: refuse a model whose MLM head is missing or was never trained (for scoring masks).
    ``encoder_only``: the caller reads only the encoder, so heads the checkpoint lacks are not warned about."""
    resolved = resolve_source(source, tokenizer_dir)
    if require_mlm and resolved.kind == "ckpt":  # an HF directory: import_hf(require_mlm=True) below
        require_trained_mlm_head(resolved)
    tokenizer = load_tokenizer(resolved.tokenizer_dir)
    vocab_size = tokenizer.vocab_size
    tokenizer.close()
    if resolved.kind == "hf":
        model = import_hf(
            resolved.weights, expected_vocab_size=vocab_size, require_mlm=require_mlm, encoder_only=encoder_only
        )
        return model, resolved.tokenizer_dir
    try:
        model = load_pretraining_weights(resolved.weights)
    except (KeyError, TypeError, RuntimeError, pickle.UnpicklingError) as err:
        if "disc_weight" in _checkpoint_hparams(resolved.weights):  # ElectraPretrainingModule's
            raise ValueError(f"{resolved.weights} {ELECTRA_CHECKPOINT}") from None
        raise ValueError(
            f"{resolved.weights} is not a BERT checkpoint written by run.py (state_dict with model.* keys "
            f"and hyper_parameters.model_config): {err}"
        ) from None
    if model.config.vocab_size != vocab_size:
        raise ValueError(
            f"{resolved.weights}: checkpoint vocab_size={model.config.vocab_size} but the tokenizer in "
            f"{resolved.tokenizer_dir} has {vocab_size} tokens; pass the tokenizer it was pretrained with"
        )
    return model, resolved.tokenizer_dir


def load_encoder(source: str | os.PathLike, tokenizer_dir: str | os.PathLike | None = None) -> tuple[BertModel, Path]:
    """``(encoder, tokenizer directory)``: the ``bert`` part of :func:`load_pretrained_model`, in
    train mode, pooler included."""
    model, resolved_tokenizer_dir = load_pretrained_model(source, tokenizer_dir, encoder_only=True)
    return model.bert, resolved_tokenizer_dir

"""Export to / import from local HF transformers directories (config.json + weights).

BERT, RoBERTa and ELECTRA checkpoints map onto our one module tree through
:mod:`bert_lm.models.families`: both directions are a key-for-key copy with shape
checks. Only local directories are read: nothing here downloads.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from bert_lm.models.bert import BertConfig, BertForPreTraining
from bert_lm.models.families import FAMILIES, Family, our_tied_keys, tied_keys, to_ours, to_theirs
from bert_lm.tokenizer.hf_remote_code import write_remote_tokenizer
from bert_lm.tokenizer.korean_tokenizer import SETTINGS_FILE

log = logging.getLogger(__name__)

# Buffers that older HF versions saved and that we recompute per call.
LEGACY_BUFFER_SUFFIXES = (".embeddings.position_ids", ".embeddings.token_type_ids")
# What a tokenizer directory may hold, ours or a published one's: the export copies
# these and nothing else (never another checkpoint's weights or config.json).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "sentencepiece.bpe.model",
    "spiece.model",
    "bert_lm_tokenizer.json",
)


# config.json key naming the objectives an export was trained with (HF ignores unknown keys):
# finetuning reads the pooler only when NSP trained it.
OBJECTIVES_KEY = "bert_lm_objectives"


def export_hf(
    model: BertForPreTraining,
    out_dir: str | Path,
    tokenizer_dir: str | Path | None = None,
    objectives: list[str] | None = None,
) -> Path:
    """Write config.json + model.safetensors (+ the tokenizer files of tokenizer_dir) for HF `from_pretrained`.

    The directory loads as the family's class (BERT: `BertForPreTraining`; RoBERTa:
    `RobertaForMaskedLM`; ELECTRA: `ElectraForMaskedLM`, a generator) and through
    `AutoModelForMaskedLM`. Tensors keep the model's dtype.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    family = FAMILIES[model.config.model_type]
    # safetensors refuses tensors that share storage, so tied copies are skipped; HF re-ties
    # them on load from `tie_word_embeddings`. contiguous(): safetensors needs dense storage.
    state = {}
    for key, tensor in model.state_dict().items():
        theirs = to_theirs(family, key, model.config.tie_word_embeddings)
        if theirs is not None:
            state[theirs] = tensor.detach().cpu().contiguous()
    if not model.config.tie_word_embeddings:
        # Untied, transformers ties nothing in the head and expects the decoder's bias under its own
        # key as well (a copy of ours: safetensors refuses two names for one storage).
        for tied, original in tied_keys(family, False).items():
            state[tied] = state[original].clone()
    save_file(state, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    hf_config = model.config.to_hf_dict()
    hf_config["dtype"] = str(next(iter(state.values())).dtype).removeprefix("torch.")
    if objectives is not None:
        hf_config[OBJECTIVES_KEY] = list(objectives)
    (out_dir / "config.json").write_text(json.dumps(hf_config, indent=2, sort_keys=True) + "\n")
    if tokenizer_dir is not None:
        write_tokenizer(tokenizer_dir, out_dir)
    return out_dir


def write_tokenizer(tokenizer_dir: str | Path, out_dir: Path) -> None:
    """The tokenizer files beside exported weights; ours also get the Mecab step as remote code,
    so that AutoTokenizer.from_pretrained(out_dir, trust_remote_code=True) gives our ids on raw text."""
    copy_tokenizer_files(tokenizer_dir, out_dir)
    if (out_dir / SETTINGS_FILE).is_file():
        write_remote_tokenizer(out_dir)


def export_electra(model, out_dir: str | Path, tokenizer_dir: str | Path | None = None) -> tuple[Path, Path]:
    """An ELECTRA pretraining model (:class:`bert_lm.models.electra.ElectraForPretraining`) as two
    transformers directories, each with the tokenizer: ``discriminator/`` (``ElectraForPreTraining``:
    ``electra.*``, ``discriminator_predictions.*``; what finetuning takes) and ``generator/``
    (``ElectraForMaskedLM``; what fill-mask and augmentation take)."""
    out_dir = Path(out_dir)
    generator_dir = export_hf(model.generator, out_dir / "generator", tokenizer_dir, objectives=["electra-generator"])
    discriminator_dir = out_dir / "discriminator"
    discriminator_dir.mkdir(parents=True, exist_ok=True)
    state = {f"electra.{k}": v for k, v in model.discriminator.state_dict().items()}
    state |= {f"discriminator_predictions.{k}": v for k, v in model.discriminator_predictions.state_dict().items()}
    state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    save_file(state, str(discriminator_dir / "model.safetensors"), metadata={"format": "pt"})
    hf_config = model.config.to_hf_dict()
    hf_config.update(architectures=["ElectraForPreTraining"], dtype=str(next(iter(state.values())).dtype)[6:])
    hf_config[OBJECTIVES_KEY] = ["electra-discriminator"]
    (discriminator_dir / "config.json").write_text(json.dumps(hf_config, indent=2, sort_keys=True) + "\n")
    if tokenizer_dir is not None:
        write_tokenizer(tokenizer_dir, discriminator_dir)
    return discriminator_dir, generator_dir


def load_electra_pair(model, pair_dir: str | Path) -> None:
    """Copy a generator + discriminator pair (``pair_dir/discriminator``, ``pair_dir/generator``: our
    ELECTRA export, or a published pair such as KoELECTRA's) into an ELECTRA pretraining model, key for
    key with shape checks. The embeddings are shared: they come from the discriminator, and a generator
    whose embeddings differ is reported (its own are not used)."""
    pair_dir = Path(pair_dir)
    discriminator_state = read_hf_state_dict(pair_dir / "discriminator")  # read once: encoder and head
    discriminator = BertForPreTraining(read_hf_config(pair_dir / "discriminator"))
    initialized = copy_hf_state_dict(discriminator, discriminator_state, source=str(pair_dir / "discriminator"))
    require_complete_encoder(initialized, pair_dir / "discriminator")
    generator = import_hf(pair_dir / "generator")
    with torch.no_grad():
        model.discriminator.load_state_dict(
            {
                k.removeprefix("bert."): v
                for k, v in discriminator.state_dict().items()
                if k.startswith("bert.") and not k.startswith("bert.pooler.")  # ELECTRA has no pooler
            }
        )
        head = {
            k.removeprefix("discriminator_predictions."): v
            for k, v in discriminator_state.items()
            if k.startswith("discriminator_predictions.")
        }
        if not head:
            raise ValueError(
                f"{pair_dir / 'discriminator'}: no discriminator_predictions.* weights (not an ElectraForPreTraining)"
            )
        model.discriminator_predictions.load_state_dict(head)
        ours = model.generator.state_dict()
        theirs = {k: v for k, v in generator.state_dict().items() if k in ours and not k.startswith("bert.embeddings.")}
        for key, tensor in theirs.items():
            if tuple(tensor.shape) != tuple(ours[key].shape):
                raise ValueError(
                    f"{pair_dir / 'generator'}: shape mismatch for {key}: {tuple(tensor.shape)} against "
                    f"{tuple(ours[key].shape)} (model.generator_size must match the published generator)"
                )
            ours[key].copy_(tensor)
    shared = generator.bert.embeddings.word_embeddings.weight
    if not torch.equal(shared, discriminator.bert.embeddings.word_embeddings.weight):
        log.warning(
            "%s: the generator's embeddings differ from the discriminator's; the shared ones are the discriminator's",
            pair_dir,
        )


def copy_tokenizer_files(tokenizer_dir: str | Path, out_dir: str | Path) -> None:
    """Copy the tokenizer files (and remote-code ``*.py`` files) of ``tokenizer_dir``."""
    for path in Path(tokenizer_dir).iterdir():
        if path.is_file() and (path.name in TOKENIZER_FILES or path.suffix == ".py"):
            shutil.copy2(path, Path(out_dir) / path.name)


def read_hf_state_dict(hf_dir: Path) -> dict[str, torch.Tensor]:
    """Weights of a local HF checkpoint: model.safetensors, else pytorch_model.bin (weights only)."""
    if (hf_dir / "model.safetensors").exists():
        return load_file(str(hf_dir / "model.safetensors"))
    if (hf_dir / "pytorch_model.bin").exists():
        # weights_only=True: a .bin is a pickle, and we never execute code from a checkpoint.
        return torch.load(hf_dir / "pytorch_model.bin", map_location="cpu", weights_only=True)
    if any(hf_dir.glob("*.index.json")):
        raise ValueError(f"{hf_dir}: sharded checkpoints are not supported (BERT sizes fit in one file)")
    raise FileNotFoundError(f"{hf_dir}: neither model.safetensors nor pytorch_model.bin found")


def normalize_hf_keys(state: dict[str, torch.Tensor], family: Family) -> dict[str, torch.Tensor]:
    """Map the spellings found in published checkpoints onto HF's current keys of ``family``."""
    known_starts = (family.prefix + ".", *family.head_keys, *family.tied_keys, *family.ignored_keys)
    if not any(key.startswith(known_starts) for key in state):
        # A bare encoder save (`BertModel`, `ElectraModel`) has no prefix.
        state = {f"{family.prefix}.{key}": tensor for key, tensor in state.items()}
    normalized = {}
    for key, tensor in state.items():
        if key.endswith(LEGACY_BUFFER_SUFFIXES):
            continue
        # TF-converted checkpoints name LayerNorm parameters gamma/beta.
        if key.endswith("LayerNorm.gamma"):
            key = key.removesuffix("gamma") + "weight"
        elif key.endswith("LayerNorm.beta"):
            key = key.removesuffix("beta") + "bias"
        normalized[key] = tensor
    return normalized


def copy_hf_state_dict(model: BertForPreTraining, state: dict[str, torch.Tensor], source: str) -> list[str]:
    """Copy `state` into `model` key for key; return the model keys it did not cover (left as initialised).

    Raises ValueError naming the key on a shape mismatch, on a key the model does not have, and
    when a tied copy (decoder weight/bias) in the checkpoint differs from what it is tied to.
    """
    family = FAMILIES[model.config.model_type]
    tie = model.config.tie_word_embeddings
    state = normalize_hf_keys(state, family)
    for tied, original in tied_keys(family, tie).items():
        if tie and tied in state and original in state and not torch.equal(state[tied], state[original]):
            raise ValueError(
                f"{source}: {tied} differs from {original} although config.json ties them "
                "(tie_word_embeddings is true or absent); set tie_word_embeddings=false there if the "
                "checkpoint was trained with untied output embeddings"
            )
        # Only decoder.bias saved; or untied, where transformers (v5) computes with the decoder's own
        # bias and leaves the head's `bias` unused: ours is one Parameter, so it takes the decoder's.
        if tied in state and (original not in state or not tie):
            state[original] = state[tied]
    targets = model.state_dict()  # tensors share storage with the parameters
    loaded: set[str] = set()
    for key, tensor in state.items():
        ours = to_ours(family, key, tie)
        if ours is None:
            continue
        if ours not in targets:
            raise ValueError(f"{source}: unexpected key {key!r} (no {family.model_type} encoder or MLM-head parameter)")
        if tuple(tensor.shape) != tuple(targets[ours].shape):
            raise ValueError(
                f"{source}: shape mismatch for {key}: checkpoint {tuple(tensor.shape)}, model {tuple(targets[ours].shape)}"
            )
        with torch.no_grad():
            targets[ours].copy_(tensor)
        loaded.add(ours)
    for key, original in our_tied_keys(tie).items():  # a tied pair is covered when its original was loaded
        if original in loaded:
            loaded.add(key)
    return sorted(set(targets) - loaded)


def read_hf_config(hf_dir: str | Path) -> BertConfig:
    """Our config for a local HF directory; ValueError naming the key for what we cannot run."""
    config_path = Path(hf_dir) / "config.json"
    if not Path(hf_dir).exists():
        raise FileNotFoundError(f"{hf_dir} does not exist: pass an HF model directory (config.json + weights)")
    if not config_path.exists():
        raise FileNotFoundError(
            f"{hf_dir}: no config.json; pass an HF model directory (a published checkpoint, or a run's hf_export/)"
        )
    try:
        return BertConfig.from_hf_dict(json.loads(config_path.read_text()))
    except ValueError as err:
        raise ValueError(f"{config_path}: {err}") from None


def require_complete_encoder(initialized: list[str], hf_dir: str | Path) -> None:
    """Heads may be new; an encoder with random layers would train and score silently wrong."""
    missing_encoder = [k for k in initialized if k.startswith(("bert.embeddings", "bert.encoder.", "bert.LayerNorm"))]
    if missing_encoder:
        raise ValueError(
            f"{hf_dir}: the checkpoint lacks {len(missing_encoder)} encoder weights (e.g. {missing_encoder[0]}): "
            "it is not a complete encoder; check the directory or its config.json"
        )


ELECTRA_HINT = (
    "an ELECTRA discriminator has no MLM head: use the generator of the pair (<run>/hf_export/generator, or the "
    "run directory once it has exported)"
)
UNTRAINED_MLM = (
    "was pretrained without MLM (train.train_mlm=false): its MLM head is untrained, so its masked-token "
    "predictions mean nothing"
)


def require_mlm_objective(hf_dir: Path) -> None:
    """Our exports say which objectives they trained (``bert_lm_objectives``): an ELECTRA discriminator
    has no MLM head, and an NSP-only run's head never learned anything. Published ones say nothing."""
    objectives = json.loads((hf_dir / "config.json").read_text()).get(OBJECTIVES_KEY)
    if objectives is None:
        return
    if "electra-discriminator" in objectives:
        raise ValueError(f"{hf_dir}: {ELECTRA_HINT}")
    if not {"mlm", "electra-generator"} & set(objectives):
        raise ValueError(f"{hf_dir} {UNTRAINED_MLM}")


def require_mlm_head(initialized: list[str], hf_dir: Path, model_type: str) -> None:
    """Scoring or filling masks with a fresh MLM head gives numbers that look real and mean nothing."""
    missing_head = [k for k in initialized if k.startswith("cls.predictions.")]
    if missing_head:
        hint = (
            "an ELECTRA discriminator: use the generator of the pair (<run>/hf_export/generator, or the run directory)"
            if model_type == "electra"
            else "a bare encoder (e.g. saved as BertModel / RobertaModel): use a checkpoint saved with its masked-LM head"
        )
        raise ValueError(f"{hf_dir} has no masked-LM head (no {missing_head[0]} or its family's name for it): {hint}")


def import_hf(
    hf_dir: str | Path, expected_vocab_size: int | None = None, require_mlm: bool = False, encoder_only: bool = False
) -> BertForPreTraining:
    """Load a local HF BERT, RoBERTa or ELECTRA directory (pretraining, masked-LM or bare encoder) as ours.

    Heads missing from the checkpoint (pooler/NSP for a masked-LM checkpoint, the MLM head of an
    ELECTRA discriminator) keep their fresh initialisation; their keys are logged as a warning, or, with
    ``encoder_only`` (a caller that reads only the encoder: finetuning), at debug level.
    Missing encoder weights are an error, and so is, with ``require_mlm`` (for whatever reads the
    MLM head's predictions: evaluation, fill-mask, augmentation), an MLM head that is missing or,
    as our export's objectives say, untrained. Like any new module the model is in train mode:
    call .eval() for inference.
    """
    hf_dir = Path(hf_dir)
    if require_mlm:
        require_mlm_objective(hf_dir)  # before the weights are read
    config = read_hf_config(hf_dir)
    if expected_vocab_size is not None and config.vocab_size != expected_vocab_size:
        raise ValueError(
            f"{hf_dir}: checkpoint vocab_size={config.vocab_size} but the tokenizer has "
            f"expected_vocab_size={expected_vocab_size}; the checkpoint was trained with a different tokenizer"
        )
    model = BertForPreTraining(config)
    initialized = copy_hf_state_dict(model, read_hf_state_dict(hf_dir), source=str(hf_dir))
    require_complete_encoder(initialized, hf_dir)
    if require_mlm:
        require_mlm_head(initialized, hf_dir, config.model_type)
    # RoBERTa and ELECTRA have no pooler or NSP head: ours stay fresh and unused, nothing to report.
    initialized = [k for k in initialized if not k.startswith(FAMILIES[config.model_type].export_drops)]
    if encoder_only:  # the heads are never read: their fresh start is no news
        log.debug("%s: heads not in the checkpoint, unused here: %s", hf_dir, initialized)
        initialized = [k for k in initialized if not k.startswith(("cls.", "bert.pooler."))]
    if initialized:
        log.warning("%s: %d keys not in the checkpoint, freshly initialised: %s", hf_dir, len(initialized), initialized)
    return model

"""Export to / import from local HF transformers BERT directories (config.json + weights).

Our parameter names equal HF's, so both directions are a key-for-key copy with shape checks.
Only local directories are read: nothing here downloads.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from bert_lm.models.bert import BertConfig, BertForPreTraining

log = logging.getLogger(__name__)

# Tied to other parameters (see BertLMPredictionHead); HF leaves them out of model.safetensors too.
TIED_KEYS = {
    "cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
    "cls.predictions.decoder.bias": "cls.predictions.bias",
}
# Buffers that older HF versions saved and that we recompute per call.
LEGACY_BUFFER_KEYS = ("bert.embeddings.position_ids", "bert.embeddings.token_type_ids")


def export_hf(model: BertForPreTraining, out_dir: str | Path, tokenizer_dir: str | Path | None = None) -> Path:
    """Write config.json + model.safetensors (+ every file of tokenizer_dir) for HF `from_pretrained`.

    The directory loads as HF `BertForPreTraining`, and as `BertForMaskedLM` / `BertModel` (which
    ignore the heads they lack). Tensors keep the model's dtype.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # safetensors refuses tensors that share storage, so the tied copies are skipped; HF re-ties
    # them on load from `tie_word_embeddings`. contiguous(): safetensors needs dense storage.
    state = {
        key: tensor.detach().cpu().contiguous() for key, tensor in model.state_dict().items() if key not in TIED_KEYS
    }
    save_file(state, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    hf_config = model.config.to_hf_dict()
    hf_config["dtype"] = str(next(iter(state.values())).dtype).removeprefix("torch.")
    (out_dir / "config.json").write_text(json.dumps(hf_config, indent=2, sort_keys=True) + "\n")
    if tokenizer_dir is not None:
        for path in Path(tokenizer_dir).iterdir():
            if path.is_file() and path.name not in ("config.json", "model.safetensors"):
                shutil.copy2(path, out_dir / path.name)
    return out_dir


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


def normalize_hf_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map the spellings found in published BERT checkpoints onto HF's current `BertForPreTraining` keys."""
    if not any(key.startswith(("bert.", "cls.")) for key in state):
        # A bare `BertModel` save has no "bert." prefix.
        state = {f"bert.{key}": tensor for key, tensor in state.items()}
    normalized = {}
    for key, tensor in state.items():
        if key in LEGACY_BUFFER_KEYS:
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
    state = normalize_hf_keys(state)
    targets = model.state_dict()  # tensors share storage with the parameters
    for key, source_key in TIED_KEYS.items():
        if key in state and source_key in state and not torch.equal(state[key], state[source_key]):
            raise ValueError(f"{source}: {key} differs from {source_key}; untied output layers are not supported")
    for key, tensor in state.items():
        if key in TIED_KEYS and TIED_KEYS[key] in state:
            continue
        if key not in targets:
            raise ValueError(f"{source}: unexpected key {key!r} (not a BertForPreTraining parameter)")
        if tuple(tensor.shape) != tuple(targets[key].shape):
            raise ValueError(
                f"{source}: shape mismatch for {key}: checkpoint {tuple(tensor.shape)}, model {tuple(targets[key].shape)}"
            )
        with torch.no_grad():
            targets[key].copy_(tensor)
    covered = set(state)
    for key, source_key in TIED_KEYS.items():  # a tied pair is covered when either half was loaded
        if key in covered or source_key in covered:
            covered |= {key, source_key}
    return sorted(set(targets) - covered)


def import_hf(hf_dir: str | Path, expected_vocab_size: int | None = None) -> BertForPreTraining:
    """Load a local HF BERT directory (BertForPreTraining, BertForMaskedLM or BertModel) as ours.

    Heads missing from the checkpoint (pooler/NSP for a masked-LM checkpoint) keep their fresh
    initialisation; their keys are logged as a warning. Missing encoder weights are an error. Like any new module the model is in train
    mode: call .eval() for inference.
    """
    hf_dir = Path(hf_dir)
    config_path = hf_dir / "config.json"
    if not config_path.exists():
        raise FileNotFoundError(f"{hf_dir}: no config.json")
    config = BertConfig.from_hf_dict(json.loads(config_path.read_text()))
    if expected_vocab_size is not None and config.vocab_size != expected_vocab_size:
        raise ValueError(
            f"{hf_dir}: checkpoint vocab_size={config.vocab_size} but the tokenizer has "
            f"expected_vocab_size={expected_vocab_size}; the checkpoint was trained with a different tokenizer"
        )
    model = BertForPreTraining(config)
    initialized = copy_hf_state_dict(model, read_hf_state_dict(hf_dir), source=str(hf_dir))
    # Heads may be new; an encoder with random layers would train and score silently wrong.
    missing_encoder = [k for k in initialized if k.startswith(("bert.embeddings.", "bert.encoder."))]
    if missing_encoder:
        raise ValueError(
            f"{hf_dir}: the checkpoint lacks {len(missing_encoder)} encoder weights (e.g. {missing_encoder[0]}): "
            "it is not a complete BERT encoder; check the directory or its config.json"
        )
    if initialized:
        log.warning("%s: %d keys not in the checkpoint, freshly initialised: %s", hf_dir, len(initialized), initialized)
    return model

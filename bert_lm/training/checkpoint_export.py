"""HF export of a pretraining checkpoint after the fact, for a run that stopped before its own.

``run.py`` exports when ``fit`` returns. A run killed by a cluster's wall-time limit, a
preempted node or Ctrl-C leaves only ``checkpoints/``: this writes the export that the
run would have written, from the same checkpoint (the best one its ``ModelCheckpoint``
recorded, else ``last.ckpt``), so that ``evaluate``, fill-mask, finetuning and
transformers take it as usual. BERT / RoBERTa-family runs export as ``export_hf`` does
(with the objectives the run trained); ELECTRA runs as the discriminator + generator pair.

The run's tokenizer is found in ``<run>/tokenizer/``, which ``run.py`` fills before
training starts (runs from before that need it named). The export is written beside its
final place and renamed into it when complete: a crash never leaves half an export that
the loaders would take for a whole one, and an existing export is never overwritten.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from bert_lm.corpus.prepare import private_temporary
from bert_lm.models.bert import BertConfig
from bert_lm.models.electra import ElectraForPretraining
from bert_lm.models.hf_interop import export_electra, export_hf
from bert_lm.tokenizer.loading import is_tokenizer_dir, load_tokenizer
from bert_lm.training.run_support import (
    HF_EXPORT_DIR,
    RUN_TOKENIZER_DIR,
    load_pretraining_weights,
    read_checkpoint,
    run_dir_of,
)


def run_tokenizer(checkpoint: Path, tokenizer_dir: str | Path | None) -> Path:
    """The tokenizer to export with: the one named, else the run's own."""
    if tokenizer_dir is not None:
        tokenizer_dir = Path(tokenizer_dir).expanduser().resolve()
        if not is_tokenizer_dir(tokenizer_dir):
            raise FileNotFoundError(f"--tokenizer {tokenizer_dir} holds no tokenizer.json or vocab.txt")
        return tokenizer_dir
    run_dir = run_dir_of(checkpoint)
    # The copy run.py makes before training; an export already there (re-exporting another checkpoint).
    candidates = [run_dir / RUN_TOKENIZER_DIR, run_dir / HF_EXPORT_DIR, run_dir / HF_EXPORT_DIR / "discriminator"]
    for candidate in candidates:
        if is_tokenizer_dir(candidate):
            return candidate
    looked = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(
        f"{checkpoint}: no tokenizer in {looked} (runs from before run.py kept a copy have theirs only in the "
        "cache): pass --tokenizer <dir>, the run's tokenizer under its paths.cache_dir (cache/tokenizers/<name>), "
        "or its tokenizer.dir / init_from checkpoint"
    )


def export_checkpoint(checkpoint: str | Path, out_dir: str | Path, tokenizer_dir: str | Path) -> Path:
    """Write ``out_dir`` (must not exist or be empty) from a ``run.py`` checkpoint, as ``run.py``
    lays its export out (an ELECTRA run: ``discriminator/`` + ``generator/``); returns ``out_dir``."""
    checkpoint, out_dir = Path(checkpoint), Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(
            f"{out_dir} already holds files (an earlier export?): nothing is overwritten; pass --out <new dir>"
        )
    try:
        state = read_checkpoint(checkpoint)  # memory-mapped: the weights are read only where used
    except Exception as err:  # torch raises several types for a file that is not a checkpoint
        raise ValueError(f"{checkpoint}: not a readable Lightning checkpoint ({type(err).__name__}: {err})") from None
    hparams = state.get("hyper_parameters", {}) if isinstance(state, dict) else {}
    if "model_config" not in hparams:
        raise ValueError(
            f"{checkpoint} was not written by run.py (no hyper_parameters.model_config): only our pretraining "
            "checkpoints are exported here"
        )
    tokenizer = load_tokenizer(tokenizer_dir)
    vocab_size = tokenizer.vocab_size
    tokenizer.close()
    if hparams["model_config"]["vocab_size"] != vocab_size:
        raise ValueError(
            f"{checkpoint}: vocab_size={hparams['model_config']['vocab_size']} but the tokenizer in {tokenizer_dir} "
            f"has {vocab_size} tokens; pass the tokenizer the run was pretrained with"
        )

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    temporary = private_temporary(out_dir)
    try:
        if "disc_weight" in hparams:  # ElectraPretrainingModule's
            model = ElectraForPretraining(
                BertConfig(**hparams["model_config"]), hparams["generator_size"], hparams["disc_weight"]
            )
            model.load_state_dict(
                {k.removeprefix("model."): v for k, v in state["state_dict"].items() if k.startswith("model.")}
            )
            export_electra(model, temporary, tokenizer_dir)
        else:
            # PretrainingModule's defaults, for a checkpoint whose hyper-parameters leave one out.
            objectives = [name for name in ("mlm", "nsp") if hparams.get(f"train_{name}", True)]
            export_hf(load_pretraining_weights(checkpoint), temporary, tokenizer_dir, objectives=objectives)
        if out_dir.exists():
            out_dir.rmdir()  # empty (checked above); rename() needs the name free
        temporary.rename(out_dir)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return out_dir


def default_export_dir(checkpoint: Path) -> Path:
    """``<run>/hf_export``, where ``run.py`` would have written it."""
    return run_dir_of(checkpoint) / HF_EXPORT_DIR

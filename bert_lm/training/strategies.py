"""Scale-out strategies (conf/strategy/*.yaml) and what each needs around it.

* ``auto`` / ``ddp``: Lightning's own; DDP also runs on CPU (gloo), so it is
  testable here.
* ``deepspeed_stage_2`` / ``deepspeed_stage_2_offload``: Lightning's
  DeepSpeedStrategy with ZeRO-2. Lightning accepts only CUDA there, so
  :func:`check_strategy_runnable` fails before any data work on a machine
  without a GPU. DeepSpeed writes a checkpoint as a directory of shards:
  :func:`consolidated_checkpoint` turns it into one fp32 file that export and
  finetuning read like any other checkpoint.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig


class StrategyUnavailableError(RuntimeError):
    pass


def check_strategy_runnable(strategy_cfg: DictConfig, cuda_available: bool | None = None) -> None:
    cuda_available = torch.cuda.is_available() if cuda_available is None else cuda_available
    if strategy_cfg.requires_cuda and not cuda_available:
        raise StrategyUnavailableError(
            f"strategy={strategy_cfg.name} needs CUDA GPUs (Lightning's DeepSpeed strategy refuses other "
            "accelerators) and none is visible: use strategy=auto or strategy=ddp here"
        )


def build_strategy(strategy_cfg: DictConfig):
    """The ``strategy`` argument of ``pl.Trainer``: a name or a Strategy object."""
    lightning = strategy_cfg.lightning
    return lightning if isinstance(lightning, str) else hydra.utils.instantiate(lightning)


def consolidated_checkpoint(checkpoint: str | Path) -> Path:
    """A single-file checkpoint: the path itself, or a DeepSpeed shard directory
    converted (once per version of its shards) to ``<dir>.fp32.ckpt`` beside it."""
    checkpoint = Path(checkpoint)
    if checkpoint.is_file():
        return checkpoint
    if not checkpoint.is_dir():
        raise FileNotFoundError(f"checkpoint {checkpoint} does not exist")
    converted = checkpoint.with_name(checkpoint.name + ".fp32.ckpt")
    # last.ckpt is rewritten in place by every save (and by a resumed run): the converted copy carries
    # the newest shard's mtime, and a copy with another one is converted again, or it would give old
    # weights and callback state. Converted beside and renamed into place: a crash or a second
    # process converting at the same time never leaves a half-written copy under the real name.
    shard_times = [p.stat().st_mtime_ns for p in checkpoint.rglob("*") if p.is_file()]
    if not shard_times:
        raise FileNotFoundError(f"DeepSpeed checkpoint {checkpoint} holds no files (a save that did not finish?)")
    newest_shard = max(shard_times)
    if not converted.is_file() or converted.stat().st_mtime_ns != newest_shard:
        from pytorch_lightning.utilities.deepspeed import convert_zero_checkpoint_to_fp32_state_dict

        temporary = converted.with_name(f".{converted.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}")
        try:
            convert_zero_checkpoint_to_fp32_state_dict(str(checkpoint), str(temporary))
            os.utime(temporary, ns=(newest_shard, newest_shard))
            os.replace(temporary, converted)
        finally:
            temporary.unlink(missing_ok=True)
    return converted

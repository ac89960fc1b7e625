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
    # last.ckpt is rewritten in place by every save (and by a resumed run): convert again when the
    # shards are newer than the converted copy, or it would give old weights and callback state.
    newest_shard = max(p.stat().st_mtime for p in checkpoint.rglob("*") if p.is_file())
    if not converted.is_file() or converted.stat().st_mtime < newest_shard:
        from pytorch_lightning.utilities.deepspeed import convert_zero_checkpoint_to_fp32_state_dict

        convert_zero_checkpoint_to_fp32_state_dict(str(checkpoint), str(converted))
    return converted

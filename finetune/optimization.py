"""What every finetuning task optimises the same way: AdamW with one learning rate for
the pretrained encoder and another for the freshly initialised head, no weight decay on
biases and LayerNorm weights (nor on what ``extra_no_decay`` names, e.g. CRF scores),
linear warmup then the configured decay."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch.optim.lr_scheduler import LambdaLR

from bert_lm.training.pretraining_module import warmup_schedule


def encoder_head_optimizer(
    named_parameters: Iterable[tuple[str, torch.nn.Parameter]],
    hparams,
    total_steps: int,
    extra_no_decay: Callable[[str], bool] = lambda name: False,
) -> dict:
    """Lightning's ``configure_optimizers`` answer; parameters named ``encoder.*`` are the encoder's."""

    def no_decay(name: str) -> bool:
        return name.endswith("bias") or "LayerNorm" in name or extra_no_decay(name)

    groups = {"encoder": [], "encoder_no_decay": [], "head": [], "head_no_decay": []}
    for name, param in named_parameters:
        if not param.requires_grad:
            continue
        part = "encoder" if name.startswith("encoder.") else "head"
        groups[part + ("_no_decay" if no_decay(name) else "")].append(param)
    hp = hparams
    param_groups = [
        {
            "name": name,
            "params": params,
            "lr": hp.encoder_lr if name.startswith("encoder") else hp.head_lr,
            "weight_decay": 0.0 if name.endswith("no_decay") else hp.weight_decay,
        }
        for name, params in groups.items()
        if params
    ]
    optimizer = torch.optim.AdamW(param_groups, lr=hp.encoder_lr, betas=tuple(hp.betas), eps=hp.adam_eps)
    warmup_steps = hp.warmup_steps if hp.warmup_steps is not None else max(1, round(hp.warmup_ratio * total_steps))
    schedule = warmup_schedule(hp.scheduler, warmup_steps, total_steps)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": LambdaLR(optimizer, schedule), "interval": "step"}}

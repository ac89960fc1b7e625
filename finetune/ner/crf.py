"""Linear-chain CRF head: a thin wrapper over pytorch-crf's ``torchcrf.CRF``.

What the wrapper adds:

* Mask checks. pytorch-crf assumes each row of the mask is on at position 0 and
  then contiguous (a prefix of ones): it scores the *last* on position as the end
  of the sequence and walks positions in order, so a gappy mask silently scores and
  decodes the wrong positions. :meth:`CRFTagger.neg_log_likelihood` and
  :meth:`CRFTagger.decode` raise ``ValueError`` instead.
* Optional IOB2 constraints: ``I-X`` only after ``B-X`` or ``I-X``, and never first;
  with ``frame_tag``, every sequence also starts and ends with that tag (our windows open
  with ``[CLS]`` and close with ``[SEP]``, both labelled ``O``: without it, a ``B-X`` read
  off ``[CLS]`` would leave the first real token an ``I-X`` that continues no entity once
  the special tokens are cut off).
  Disallowed scores (``start_transitions[I-X]``, ``transitions[prev, I-X]``) get a
  fixed ``-10000`` added through a ``torch.nn.utils.parametrize`` parametrization:
  ``crf.transitions`` reads as ``free + mask``, the optimizer only ever sees
  ``free``, and the mask is a non-trainable, non-persistent buffer rebuilt from the
  labels. Writing ``-10000`` into the parameter once would not stay: weight decay
  and gradient steps would move it back towards zero during fine-tuning.
  A large finite value rather than ``-inf``: a gold path that breaks a constraint
  (it cannot, after :func:`finetune.ner.alignment.repair_iob2`) then costs a large loss
  instead of ``inf``/``nan`` gradients.
* Emissions are cast to float32 (the forward algorithm's logsumexp over a sequence
  is not something to run in fp16/bf16 under autocast).
* Tags at masked-out positions may hold anything (e.g. ``-100``): they are replaced
  by 0 before pytorch-crf indexes with them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.utils import parametrize
from torchcrf import CRF

DISALLOWED_SCORE = -10_000.0


def iob2_transition_masks(labels: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Additive masks ``(start (T,), transitions (T, T))`` forbidding what IOB2 does:
    ``I-X`` as the first tag, and ``I-X`` after anything but ``B-X``/``I-X``.
    ``transitions[i, j]`` scores tag ``i`` followed by tag ``j`` (pytorch-crf layout)."""
    num_tags = len(labels)
    start = torch.zeros(num_tags)
    transitions = torch.zeros(num_tags, num_tags)
    for j, tag in enumerate(labels):
        if not tag.startswith("I-"):
            continue
        entity_type = tag[2:]
        start[j] = DISALLOWED_SCORE
        for i, previous in enumerate(labels):
            if previous not in (f"B-{entity_type}", f"I-{entity_type}"):
                transitions[i, j] = DISALLOWED_SCORE
    return start, transitions


class _AddFixedMask(nn.Module):
    """Parametrization ``free -> free + mask`` with a constant mask."""

    def __init__(self, mask: torch.Tensor):
        super().__init__()
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, free: torch.Tensor) -> torch.Tensor:
        return free + self.mask


def check_mask(mask: torch.Tensor) -> torch.Tensor:
    """``mask`` as bool (B, T), after checking each row is on at 0 and contiguous."""
    if mask.dim() != 2:
        raise ValueError(f"mask must be (batch, seq_len), got shape {tuple(mask.shape)}")
    mask = mask.bool()
    if mask.shape[1] == 0 or not mask[:, 0].all():
        raise ValueError("CRF mask must be on at position 0 of every sequence (no empty sequences)")
    # Contiguous: once off, never on again, i.e. no 0 -> 1 step along a row.
    if (mask[:, 1:] & ~mask[:, :-1]).any():
        rows = torch.nonzero((mask[:, 1:] & ~mask[:, :-1]).any(dim=1)).flatten().tolist()
        raise ValueError(
            f"CRF mask is not contiguous in batch rows {rows[:10]}: pytorch-crf would score and "
            "decode the wrong positions. Label every token inside the attention mask instead of "
            "masking out non-first subwords."
        )
    return mask


def _rename_plain_end_transitions(module, state_dict, prefix, *args) -> None:
    plain, parametrized = f"{prefix}crf.end_transitions", f"{prefix}crf.parametrizations.end_transitions.original"
    if plain in state_dict and parametrized not in state_dict:
        state_dict[parametrized] = state_dict.pop(plain)


class CRFTagger(nn.Module):
    """CRF over per-token emission scores, batch first.

    ``labels`` (tag names in label-id order) is needed for ``constrained_transitions``.
    """

    def __init__(
        self,
        num_tags: int,
        constrained_transitions: bool = False,
        labels: Sequence[str] | None = None,
        frame_tag: str | None = None,
    ):
        super().__init__()
        if labels is not None and len(labels) != num_tags:
            raise ValueError(f"{len(labels)} labels for num_tags={num_tags}")
        if constrained_transitions and labels is None:
            raise ValueError("constrained_transitions needs the label names (which ids are B-X/I-X)")
        self.num_tags = num_tags
        self.constrained_transitions = constrained_transitions
        self.labels = list(labels) if labels is not None else None
        self.crf = CRF(num_tags, batch_first=True)
        if constrained_transitions:
            start_mask, transition_mask = iob2_transition_masks(self.labels)
            if frame_tag is not None:
                if frame_tag not in self.labels:
                    raise ValueError(f"frame_tag={frame_tag!r} is not one of the labels {self.labels}")
                # Only the frame tag may open or close a sequence.
                start_mask = torch.full((num_tags,), DISALLOWED_SCORE)
                start_mask[self.labels.index(frame_tag)] = 0.0
                end_mask = start_mask.clone()
                parametrize.register_parametrization(self.crf, "end_transitions", _AddFixedMask(end_mask))
                # Taggers saved before the frame constraint hold crf.end_transitions under its plain name.
                self.register_load_state_dict_pre_hook(_rename_plain_end_transitions)
            parametrize.register_parametrization(self.crf, "start_transitions", _AddFixedMask(start_mask))
            parametrize.register_parametrization(self.crf, "transitions", _AddFixedMask(transition_mask))

    def _check_emissions(self, emissions: torch.Tensor) -> torch.Tensor:
        if emissions.dim() != 3 or emissions.shape[-1] != self.num_tags:
            raise ValueError(f"emissions must be (batch, seq_len, {self.num_tags}), got {tuple(emissions.shape)}")
        return emissions.float()

    def neg_log_likelihood(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean over the batch of ``-log p(tags | emissions)``.

        emissions: (B, T, num_tags); tags: (B, T) long; mask: (B, T) on at 0, contiguous.
        """
        emissions = self._check_emissions(emissions)
        mask = check_mask(mask)
        if tags.shape != mask.shape:
            raise ValueError(f"tags shape {tuple(tags.shape)} != mask shape {tuple(mask.shape)}")
        tags = tags.long().masked_fill(~mask, 0)
        # cached(): the parametrized transitions are computed once per call, not once
        # per time step inside pytorch-crf's loops.
        with parametrize.cached():
            log_likelihood = self.crf(emissions, tags, mask=mask, reduction="mean")
        return -log_likelihood

    @torch.no_grad()
    def decode(self, emissions: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
        """Viterbi best tag ids per sequence, each as long as its mask's on positions."""
        emissions = self._check_emissions(emissions)
        mask = check_mask(mask)
        with parametrize.cached():
            return self.crf.decode(emissions, mask=mask)

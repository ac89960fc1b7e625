"""Fill-mask with a pretrained model: top-k candidates for each ``[MASK]``.

    python -m bert_lm.fill_mask <run dir, .ckpt or HF dir> "이순신은 [MASK] 중기의 무신이다." --top-k 5

The Mecab step is handled here: raw text goes in, ``[MASK]`` is protected from
Mecab, and candidates come back as text. A candidate for a mask that continues a
word (``[MASK]`` glued to the text before it) is a ``##`` piece.

With HF transformers directly, segment first (the export holds tokenizer.json):
``pipeline("fill-mask", model=export_dir)(KoreanTokenizer.load(export_dir).segment(text))``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from bert_lm.models.bert import BertForPreTraining
from bert_lm.tokenizer.korean_tokenizer import KoreanTokenizer
from bert_lm.tokenizer.loading import load_tokenizer
from bert_lm.training.encoder_loading import load_pretrained_model, masked_lm_source


@dataclass(frozen=True)
class Candidate:
    token: str  # vocabulary piece, "##" kept
    score: float  # softmax probability
    text: str  # the input with this mask filled in (others left as [MASK])


def load_for_fill_mask(path: str | Path) -> tuple[BertForPreTraining, KoreanTokenizer]:
    """A pretraining run directory (its export, or the checkpoint a stopped run's export would hold),
    one of its ``.ckpt`` files, or an HF directory; an ELECTRA run or pair fills masks with its generator.
    Loaded as ``bert_lm.evaluate`` loads what it scores, so both refuse an untrained MLM head alike."""
    model, tokenizer_dir = load_pretrained_model(masked_lm_source(path), require_mlm=True)
    return model.eval(), load_tokenizer(tokenizer_dir)


@torch.no_grad()
def fill_mask(
    model: BertForPreTraining, tokenizer: KoreanTokenizer, text: str, top_k: int = 5
) -> list[list[Candidate]]:
    """Top-k candidates for each [MASK] in ``text``, in order of appearance."""
    encoding = tokenizer.encode(text)
    if tokenizer.mask_id not in encoding.ids:
        raise ValueError(f"no [MASK] in {text!r}: write [MASK] where a word or piece should be predicted")
    max_tokens = model.config.max_position_embeddings - 2
    if len(encoding.ids) > max_tokens:
        raise ValueError(f"the text has {len(encoding.ids)} tokens; this model reads at most {max_tokens}")
    input_ids = torch.tensor([[tokenizer.cls_id, *encoding.ids, tokenizer.sep_id]])
    mlm_logits, _ = model.full_mlm_logits(input_ids, torch.zeros_like(input_ids), torch.ones_like(input_ids))
    probabilities = mlm_logits[0].float().softmax(dim=-1)  # (T, V)
    results = []
    for position, (token_id, (start, end)) in enumerate(zip(encoding.ids, encoding.offsets, strict=True), start=1):
        if token_id != tokenizer.mask_id:
            continue
        scores, ids = probabilities[position].topk(top_k)
        candidates = []
        for score, candidate_id in zip(scores.tolist(), ids.tolist(), strict=True):
            piece = tokenizer.id_to_token(candidate_id)
            candidates.append(Candidate(piece, score, text[:start] + piece.removeprefix("##") + text[end:]))
        results.append(candidates)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Top-k fill-mask candidates from a pretrained model.")
    parser.add_argument("model_dir", help="run directory, one of its .ckpt files, or an HF directory")
    parser.add_argument("text", nargs="+", help="text with one or more [MASK]")
    parser.add_argument("--top-k", type=int, default=5)
    args = parser.parse_args(argv)
    try:
        model, tokenizer = load_for_fill_mask(args.model_dir)
        for text in args.text:
            print(text)
            for mask_number, candidates in enumerate(fill_mask(model, tokenizer, text, args.top_k), start=1):
                for rank, candidate in enumerate(candidates, start=1):
                    print(f"  [MASK] {mask_number} #{rank}  {candidate.score:.4f}  {candidate.token}\t{candidate.text}")
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Write a transformers-initialised random BERT of our ``small`` size, with a given tokenizer.

    python bench/make_hf_random_encoder.py OUT_DIR [--tokenizer DIR]

The checkpoint is written by transformers itself (``BertForPreTraining`` with random
weights, ``save_pretrained``), as a published one would be; ``--tokenizer`` (default: the
newest Mecab-aware tokenizer under cache/tokenizers) is copied beside it. Finetuned by
``bench/ner_experiment.py --encoder OUT_DIR``, it should score like our own random-init
row: the harness must treat an outside checkpoint exactly as its own.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))


def main() -> None:
    import transformers
    import yaml

    from bert_lm.models.hf_interop import copy_tokenizer_files
    from bert_lm.tokenizer.loading import load_tokenizer

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("--tokenizer", help="tokenizer directory (default: newest cache/tokenizers/mecab-wordpiece-*)")
    args = parser.parse_args()
    tokenizer_dir = Path(args.tokenizer) if args.tokenizer else None
    if tokenizer_dir is None:
        candidates = sorted(
            (REPO_ROOT / "cache" / "tokenizers").glob("mecab-wordpiece-*"), key=lambda p: p.stat().st_mtime
        )
        if not candidates:
            sys.exit("no cache/tokenizers/mecab-wordpiece-*: run bench/ner_experiment.py first or pass --tokenizer")
        tokenizer_dir = candidates[-1]
    tokenizer = load_tokenizer(tokenizer_dir)
    small = yaml.safe_load((REPO_ROOT / "conf" / "model" / "small.yaml").read_text())
    small = {k: v for k, v in small.items() if k not in ("defaults", "vocab_size", "pad_token_id")}
    config = transformers.BertConfig(**small, vocab_size=tokenizer.vocab_size, pad_token_id=tokenizer.pad_id)
    out_dir = Path(args.out_dir)
    transformers.BertForPreTraining(config).save_pretrained(out_dir)
    copy_tokenizer_files(tokenizer_dir, out_dir)
    print(f"wrote {out_dir} (BertForPreTraining, random, vocab {tokenizer.vocab_size}, tokenizer {tokenizer_dir})")


if __name__ == "__main__":
    main()

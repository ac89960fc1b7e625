"""Tag raw sentences with a finetuned NER model, or classify them with a classification model.

    python -m finetune.predict <finetune run dir> "이순신은 조선 중기의 무신이다." [...]
    python -m finetune.predict <finetune run dir> --file sentences.txt   # one sentence per line

For each sentence it prints the sentence with inline markup as a ``## `` line,
then one line per entity: surface, type, start, end (character offsets into the
sentence, end exclusive)::

    ## <이순신:PS>은 조선 중기의 무신이다.
    이순신	PS	0	3

A finetune run directory holds ``ner_export/`` (written by
:func:`finetune.ner.export.save_ner_export` at the end of ``run_finetune.py``): ``ner_model.pt`` --
the tagger's weights, its encoder config, the label list, the head and the window
settings, plain tensors and containers loaded with ``torch.load(weights_only=True)``
-- and the tokenizer files. The export directory itself is accepted too.
Sentences longer than the model length are read in overlapping windows, as in
evaluation, so every character gets a tag.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from finetune.classification.export import is_classification_export, load_classification_export
from finetune.ner.export import MODEL_FILE, NER_EXPORT_DIR, Entity, load_ner_export
from finetune.ner.klue_ner import to_inline


def format_entities(text: str, entities: Sequence[Entity]) -> list[str]:
    tags = ["O"] * len(text)
    for entity in entities:
        tags[entity.start] = f"B-{entity.type}"
        for i in range(entity.start + 1, entity.end):
            tags[i] = f"I-{entity.type}"
    return [f"## {to_inline(text, tags)}", *(f"{e.text}\t{e.type}\t{e.start}\t{e.end}" for e in entities)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Tag entities (KLUE NER runs) or classify sentences (classification runs) with a finetuned model."
    )
    parser.add_argument("model_dir", help="finetune run directory (run_dir: of run_finetune.py) or its export")
    parser.add_argument("sentences", nargs="*", help="sentences to tag or classify")
    parser.add_argument("--file", help="a UTF-8 text file with one sentence per line (blank lines skipped)")
    parser.add_argument(
        "--pair", action="append", default=None, help="classification of pairs: the second text, once per sentence"
    )
    args = parser.parse_args(argv)
    texts = list(args.sentences)
    try:
        if args.file:
            texts += [
                line.rstrip("\r") for line in Path(args.file).read_text(encoding="utf-8").split("\n") if line.strip()
            ]
        if not texts:
            parser.error("give sentences as arguments or --file")
        if is_classification_export(args.model_dir):
            if args.pair is not None and len(args.pair) != len(texts):
                parser.error(f"--pair given {len(args.pair)} times for {len(texts)} sentences: give one per sentence")
            predictor = load_classification_export(args.model_dir)
            for i, probs in enumerate(predictor.probabilities(texts, args.pair)):
                best = max(range(len(probs)), key=probs.__getitem__)
                pair = f"\t{args.pair[i]}" if args.pair else ""
                shown = "  ".join(f"{label}={p:.3f}" for label, p in zip(predictor.labels, probs, strict=True))
                print(f"{predictor.labels[best]}\t{texts[i]}{pair}\t{shown}")
            return 0
        model_dir = Path(args.model_dir).expanduser()
        if not ((model_dir / NER_EXPORT_DIR).is_dir() or (model_dir / MODEL_FILE).is_file()) and model_dir.is_dir():
            raise FileNotFoundError(
                f"{model_dir} holds neither ner_export/ nor classification_export/: pass the run_dir: that "
                "run_finetune.py printed (a pretraining run fills masks instead: python -m bert_lm.fill_mask)"
            )
        if args.pair:
            parser.error("--pair is for classification runs; this is an NER run")
        predictor = load_ner_export(args.model_dir)
        for text, entities in zip(texts, predictor.entities(texts), strict=True):
            print("\n".join(format_entities(text, entities)))
    except (FileNotFoundError, ValueError, UnicodeDecodeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

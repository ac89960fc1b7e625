"""Why an encoder does or does not help a task, from its vocabulary: three measurements.

    python bench/vocabulary_diagnostics.py pieces TOKENIZER_DIR [TOKENIZER_DIR ...] --text FILE
    python bench/vocabulary_diagnostics.py collapse HF_DIR --corpus FILE --probe-text FILE
    python bench/vocabulary_diagnostics.py redraw HF_DIR --corpus FILE --out DIR [--below 20]

``pieces``: pieces per whitespace word, the share of ``##`` pieces, the share of the 100
most frequent pieces and of ``[UNK]`` (with the text it stood for) on every 20th line of FILE. A tokenizer that keeps most words whole
leaves the MLM few easy targets (particles and endings as their own pieces), which is what a
small encoder learns first. For a Mecab-aware tokenizer also pieces per morpheme and the share
of morphemes WordPiece splits further: whole-word masks of Mecab morphemes differ from
single-token masks only on the tokens of those morphemes (a ``##`` piece may start a morpheme
or continue one, so the token ids alone do not say which).

``collapse``: mean pairwise cosine of the word embeddings of pieces seen at most once in a
10 % sample of the pretraining corpus, against pieces of middling frequency; and the share of
the probe text's tokens that are such rare pieces. With tied input/output embeddings every
softmax step pushes the rows of all non-target pieces the same way (Gao et al. 2019,
"Representation Degeneration"), so rare pieces end up close together, while a random
encoder keeps them apart.

``redraw``: a copy of the export whose embeddings of pieces seen fewer than ``--below`` times
in the corpus are drawn again from the initialiser N(0, 0.02): finetune it beside the original
to see how much of a gap the collapsed rows explain.

Used for the hate-speech analysis in bench/RESULTS.md (pretraining_budget).
"""

from __future__ import annotations

import argparse
import collections
import shutil
import sys
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from bert_lm.tokenizer.korean_tokenizer import KoreanTokenizer  # noqa: E402

WEIGHTS_FILE = "model.safetensors"


def _text_lines(path: str | Path) -> list[str]:
    """Lines of a prepared corpus or a text file, without [EOD] markers; a TSV keeps its first column."""
    lines = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            text = line.rstrip("\n").split("\t")[0].strip()
            if text and text != "[EOD]":
                lines.append(text)
    return lines


def piece_statistics(tokenizer_dirs: list[str], text: str) -> None:
    sample = _text_lines(text)[::20][:3000]
    words = sum(len(line.split()) for line in sample)
    for directory in tokenizer_dirs:
        tokenizer = KoreanTokenizer.load(directory, num_workers=1)
        counts: collections.Counter[str] = collections.Counter()
        for encoded in tokenizer.encode_batch(sample):
            counts.update(encoded.tokens)
        total = sum(counts.values())
        continuation = sum(c for piece, c in counts.items() if piece.startswith("##")) / total
        top100 = sum(c for _, c in counts.most_common(100)) / total
        # [UNK]: a word holding a character outside the vocabulary's alphabet is lost whole.
        unknown = collections.Counter()
        lines_with_unknown = 0
        for line, encoded in zip(sample, tokenizer.encode_batch(sample), strict=True):
            spans = [
                line[start:end]
                for token_id, (start, end) in zip(encoded.ids, encoded.offsets, strict=True)
                if token_id == tokenizer.unk_id
            ]
            unknown.update(spans)
            lines_with_unknown += bool(spans)
        print(
            f"{Path(directory).name} ({tokenizer.vocab_size} pieces): pieces per word {total / words:.2f}, "
            f"## share {continuation:.3f}, top-100 share {top100:.3f}, [UNK] share {counts['[UNK]'] / total:.4f} "
            f"({lines_with_unknown / len(sample):.3f} of lines), most frequent: {unknown.most_common(8)}"
        )
        if tokenizer.mecab:
            morpheme_statistics(tokenizer, sample)


def morpheme_statistics(tokenizer: KoreanTokenizer, sample: list[str]) -> None:
    """Pieces per Mecab morpheme: each morpheme is one pre-tokenized word of the WordPiece model."""
    segmented = [tokenizer.segment(line).split() for line in sample]
    encodings = tokenizer.hf_tokenizer.encode_batch(segmented, is_pretokenized=True, add_special_tokens=False)
    pieces_per_morpheme = np.concatenate(
        [
            np.bincount(np.asarray(e.word_ids, np.int64), minlength=len(words))
            for e, words in zip(encodings, segmented, strict=True)
        ]
    )
    split = pieces_per_morpheme > 1
    print(
        f"  morphemes: {len(pieces_per_morpheme)}, pieces per morpheme {pieces_per_morpheme.mean():.3f}, "
        f"split into more than one piece {split.mean():.3f} of morphemes, "
        f"{pieces_per_morpheme[split].sum() / pieces_per_morpheme.sum():.3f} of pieces"
    )


def _embeddings(hf_dir: Path) -> tuple[str, dict[str, np.ndarray]]:
    from safetensors.numpy import load_file

    weights = load_file(hf_dir / WEIGHTS_FILE)
    keys = [k for k in weights if k.endswith("word_embeddings.weight")]
    if len(keys) != 1:
        raise SystemExit(f"{hf_dir / WEIGHTS_FILE}: expected one word_embeddings.weight, found {keys}")
    return keys[0], weights


def _piece_counts(tokenizer: KoreanTokenizer, lines: list[str]) -> collections.Counter[int]:
    return collections.Counter(i for ids in tokenizer.encode_ids_batch(lines) for i in ids)


def _rare_pieces(tokenizer: KoreanTokenizer, counts: collections.Counter[int], below: int) -> list[int]:
    """Ids of ordinary pieces seen fewer than ``below`` times (special tokens never count as pieces)."""
    special = set(tokenizer.special_ids)
    return [i for i in range(tokenizer.vocab_size) if i not in special and counts[i] < below]


def _mean_cosine(rows: np.ndarray) -> float:
    unit = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    similarity = unit @ unit.T
    n = len(rows)
    return float((similarity.sum() - n) / (n * n - n))


def collapse(hf_dir: Path, corpus: str, probe_text: str) -> None:
    key, weights = _embeddings(hf_dir)
    table = weights[key].astype(np.float64)
    tokenizer = KoreanTokenizer.load(hf_dir, num_workers=1)
    counts = _piece_counts(tokenizer, _text_lines(corpus)[::10])
    probe = _piece_counts(tokenizer, _text_lines(probe_text)[:3000])
    rare = _rare_pieces(tokenizer, counts, below=2)
    middling = [i for i, _ in counts.most_common(2000)[200:]]
    rng = np.random.default_rng(0)
    rare_sample = rng.choice(rare, min(300, len(rare)), replace=False)
    middling_sample = rng.choice(middling, min(300, len(middling)), replace=False)
    probe_rare = sum(c for i, c in probe.items() if counts[i] <= 1) / sum(probe.values())
    print(f"{key}: {table.shape[0]} rows, {len(rare)} seen at most once in a 10 % sample of {corpus}")
    print(f"mean cosine among middling-frequency pieces: {_mean_cosine(table[middling_sample]):.3f}")
    print(f"share of {probe_text} tokens that are rare pieces: {probe_rare:.3f}")
    print(f"rare_piece_mean_cosine: {_mean_cosine(table[rare_sample]):.3f}")


def redraw(hf_dir: Path, corpus: str, out_dir: Path, below: int) -> None:
    from safetensors.numpy import save_file

    key, weights = _embeddings(hf_dir)
    tokenizer = KoreanTokenizer.load(hf_dir, num_workers=1)
    counts = _piece_counts(tokenizer, _text_lines(corpus))
    table = weights[key].copy()
    rare = np.array(_rare_pieces(tokenizer, counts, below))
    table[rare] = np.random.default_rng(0).normal(0.0, 0.02, size=(len(rare), table.shape[1])).astype(table.dtype)
    weights[key] = table
    shutil.copytree(hf_dir, out_dir, dirs_exist_ok=True)
    save_file(weights, out_dir / WEIGHTS_FILE, metadata={"format": "pt"})
    print(f"{out_dir}: redrew {len(rare)} of {len(table)} embeddings (pieces seen < {below} times)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    pieces = commands.add_parser("pieces", help="piece statistics of tokenizers on a text")
    pieces.add_argument("tokenizer_dirs", nargs="+")
    pieces.add_argument("--text", required=True, help="a text file (a prepared corpus's valid.txt)")
    collapsed = commands.add_parser("collapse", help="cosine of rare pieces' embeddings")
    collapsed.add_argument("hf_dir", type=Path, help="an HF export (config.json, model.safetensors, tokenizer)")
    collapsed.add_argument("--corpus", required=True, help="the pretraining corpus (prepared train.txt)")
    collapsed.add_argument("--probe-text", required=True, help="the task's text (TSV: first column)")
    redrawn = commands.add_parser("redraw", help="copy an export with rare pieces' embeddings redrawn")
    redrawn.add_argument("hf_dir", type=Path)
    redrawn.add_argument("--corpus", required=True)
    redrawn.add_argument("--out", type=Path, required=True)
    redrawn.add_argument("--below", type=int, default=20)
    args = parser.parse_args()
    if args.command == "pieces":
        piece_statistics(args.tokenizer_dirs, args.text)
    elif args.command == "collapse":
        collapse(args.hf_dir, args.corpus, args.probe_text)
    else:
        redraw(args.hf_dir, args.corpus, args.out, args.below)


if __name__ == "__main__":
    main()

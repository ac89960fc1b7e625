"""Tokenizer benchmark: Mecab-aware WordPiece against plain WordPiece, one run.

On ../shared/data/korean_petitions (prepared as run.py prepares it: cleaned,
split into sentences), for each tokenizer: training time, encode throughput
(lines/s, chars/s) over the whole corpus in 10,000-line batches with every core
(as the token cache is built), average tokens per word and the [UNK] rate.
Encoding starts from cold per-process word caches: the figure includes every
Mecab call the corpus needs. Also printed: a second, warm pass (every word already
in the tokenizer's word -> ids memo, as most words are once a large corpus is under
way) and the floor that Mecab alone sets: one Mecab call per distinct word, spread
perfectly over the cores, against plain WordPiece's time for the whole corpus.

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

from bert_lm import mecab_segmenter  # noqa: E402
from bert_lm.prepare_corpus import PrepareSettings, prepare_corpus  # noqa: E402
from bert_lm.text_cleaning import CleaningConfig  # noqa: E402
from bert_lm.tokenization import KoreanTokenizer  # noqa: E402

PETITIONS = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "korean_petitions"
BATCH_LINES = 10_000


def load_sentences(work_dir: Path) -> list[str]:
    settings = PrepareSettings(source="petitions", root=str(PETITIONS), file_pattern="petitions_*",
                               split_sentences=True, valid_ratio=0.0)
    prepare_corpus(settings, CleaningConfig(), work_dir / "prepared", show_progress=False)
    lines = (work_dir / "prepared" / "train.txt").read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line != "[EOD]"]


def encode_corpus(tokenizer: KoreanTokenizer, lines: list[str]) -> tuple[float, list[list[int]]]:
    started = time.perf_counter()
    ids: list[list[int]] = []
    for i in range(0, len(lines), BATCH_LINES):
        ids.extend(tokenizer.encode_ids_batch(lines[i : i + BATCH_LINES]))
    return time.perf_counter() - started, ids


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
        tokenizer = KoreanTokenizer.train(lines, mecab=mecab, vocab_size=20_000, num_lines=len(lines),
                                          show_progress=False)
        train_s = time.perf_counter() - started
        # Cold start for encoding: no word the training pass cached is reused.
        mecab_segmenter._SEGMENTED_CACHE.clear()
        mecab_segmenter._MORPHEME_CACHE.clear()
        tokenizer = KoreanTokenizer(tokenizer.hf_tokenizer, mecab=mecab)
        if mecab:
            tokenizer._worker_pool()  # start-up of the pool is not encoding work
        encode_s, ids = encode_corpus(tokenizer, lines)
        warm_s, _ = encode_corpus(tokenizer, lines)
        tokenizer.close()
        n_tokens = sum(len(x) for x in ids)
        n_unk = sum(x.count(tokenizer.unk_id) for x in ids)
        results[name] = dict(train_s=train_s, lines_s=len(lines) / encode_s, chars_s=chars / encode_s,
                             warm_lines_s=len(lines) / warm_s, encode_s=encode_s,
                             tokens_per_word=n_tokens / words, unk_rate=n_unk / n_tokens)

    print(f"{'tokenizer':<10} {'train s':>8} {'lines/s':>10} {'chars/s':>12} {'tok/word':>9} {'[UNK] %':>8}")
    for name, r in results.items():
        print(f"{name:<10} {r['train_s']:>8.1f} {r['lines_s']:>10,.0f} {r['chars_s']:>12,.0f} "
              f"{r['tokens_per_word']:>9.2f} {100 * r['unk_rate']:>8.4f}")
    distinct = mecab_segmenter.unknown_words_for({}, lines)
    tagger = mecab_segmenter._get_tagger()
    probe = distinct[:: max(1, len(distinct) // 20_000)]
    started = time.perf_counter()
    for word in probe:
        tagger.parse(word)
    mecab_per_word_s = (time.perf_counter() - started) / len(probe)
    floor_s = mecab_per_word_s * len(distinct) / (os.cpu_count() or 1)
    print(f"distinct words: {len(distinct):,} ({100 * len(distinct) / words:.1f} % of {words:,}); "
          f"Mecab {mecab_per_word_s * 1e6:.1f} µs per distinct word -> floor {floor_s:.2f} s on "
          f"{os.cpu_count()} cores, plain WordPiece's whole corpus {results['plain']['encode_s']:.2f} s: "
          f"ratio ceiling {results['plain']['encode_s'] / floor_s:.2f} before any WordPiece work")
    print(f"warm pass (every word memoised): mecab {results['mecab']['warm_lines_s']:,.0f} lines/s, "
          f"plain {results['plain']['warm_lines_s']:,.0f} lines/s, "
          f"ratio {results['mecab']['warm_lines_s'] / results['plain']['warm_lines_s']:.2f}")
    print(f"mecab_unk_rate_percent: {100 * results['mecab']['unk_rate']:.4f}")
    print(f"mecab_encode_ratio: {results['mecab']['lines_s'] / results['plain']['lines_s']:.2f}")


if __name__ == "__main__":
    main()

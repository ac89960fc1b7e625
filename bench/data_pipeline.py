"""Data pipeline benchmark: loader throughput against a training step, and memory per corpus size.

    python bench/data_pipeline.py

On ../shared/data/korean_petitions, prepared as run.py prepares it (cleaned, sentence-split)
and tokenized with a Mecab-aware WordPiece of 20,000 pieces trained on it:

(a) examples/s of PretrainingDataModule's train loader at model=small settings (max_len 128,
    batch 64, NSP, 15 % masking), with 0 and 2 workers, against the examples/s one training
    step of the small BERT (bert_lm.models.bert, H=256, L=2, forward + backward + AdamW) consumes.
    Target: loader >= 20x the consumption rate.
(b) peak RSS growth of a fresh process while it iterates one epoch (num_workers=0, so all the
    work is in the measured process) over the ~10 MB corpus and over a >= 1 GB corpus, next to
    the in-memory approach of the original recipes (google-research/bert's
    create_pretraining_data.py and HF's TextDatasetForNextSentencePrediction hold every document
    and every example as Python lists of token ids) on the same corpora. Growth is VmHWM at the
    end minus VmRSS after imports, with the high-water mark reset there (/proc/self/clear_refs).

The >= 1 GB corpus is the prepared petitions text repeated 100 times. Tokenizing 1 GB with Mecab
on two cores would take most of an hour and measures the tokenizer, not the loader, so its
cache is built directly by replicating the 10 MB cache's token arrays 100 times (same format,
same writer). The loader iterates its epoch (~2 M examples, ~2.5 minutes at 0 workers on two
idle cores) for at most BIG_CORPUS_SECONDS; the output says which share of the epoch it read.
The epoch order is a permutation of the whole corpus, so a partial epoch reads from all of it,
and its plan is built over all of it. The in-memory approach at 1 GB would need tens of GB: it is measured at 1x, 2x and 4x the 10 MB
corpus and extrapolated linearly (memory is linear in corpus size; the fit is printed).

Prints a table, then `rss_growth_mb: <x>` last (our loader on the >= 1 GB corpus; target <= 50).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

PETITIONS = REPO_ROOT.parent / "shared" / "data" / "korean_petitions"
MAX_LEN, BATCH = 128, 64
BIG_CORPUS_COPIES = 100
# The >= 1 GB corpus's epoch (~2 M examples) takes ~2.5 min on two idle cores; the time limit
# keeps the whole benchmark under 10 minutes on a busy machine.
BIG_CORPUS_SECONDS = 200.0
IN_MEMORY_COPIES = (1, 2, 4)


def rss_status() -> dict[str, float]:
    """VmRSS and VmHWM of this process in MB."""
    with open("/proc/self/status") as f:
        fields = dict(line.split(":", 1) for line in f if line.startswith(("VmRSS", "VmHWM")))
    return {key: int(value.split()[0]) / 1024 for key, value in fields.items()}


def reset_peak() -> float:
    """Reset VmHWM to the current RSS; returns that RSS in MB."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return rss_status()["VmRSS"]


# ---------------------------------------------------------------------------------------
# Child processes: one measurement each, in a fresh interpreter


def child_ours(cache_dir: str, tokenizer_dir: str, plan_root: str, max_seconds: float | None) -> dict:
    """Our loader over one epoch (or what max_seconds allow of it), all in this process."""
    from bert_lm.data.datamodule import ResumableDataLoader, ShardedEpochSampler
    from bert_lm.data.masking import MlmMasker, PretrainingCollator
    from bert_lm.data.pretraining_examples import PretrainingDataset
    from bert_lm.data.token_cache import TokenCache
    from bert_lm.tokenizer.korean_tokenizer import KoreanTokenizer

    tokenizer = KoreanTokenizer.load(tokenizer_dir)
    masker = MlmMasker(tokenizer.vocab_size, tokenizer.mask_id, tokenizer.special_ids)
    baseline = reset_peak()
    started = time.perf_counter()
    cache = TokenCache.open(cache_dir)
    dataset = PretrainingDataset(
        cache,
        plan_root,
        max_len=MAX_LEN,
        train_nsp=True,
        short_seq_prob=0.1,
        nsp_prob=0.5,
        seed=0,
        cls_id=tokenizer.cls_id,
        sep_id=tokenizer.sep_id,
    )
    plan_s = time.perf_counter() - started
    after_plan = rss_status()["VmHWM"]
    sampler = ShardedEpochSampler(len(dataset), prepare_epoch=dataset.ensure_plan)
    loader = ResumableDataLoader(
        dataset, batch_size=BATCH, sampler=sampler, collate_fn=PretrainingCollator(masker, tokenizer.pad_id, seed=0)
    )
    examples, started = 0, time.perf_counter()
    for batch in loader:
        examples += len(batch["input_ids"])
        if max_seconds is not None and time.perf_counter() - started > max_seconds:
            break
    return {
        "baseline_mb": baseline,
        "growth_mb": rss_status()["VmHWM"] - baseline,
        "growth_after_plan_mb": after_plan - baseline,
        "plan_s": plan_s,
        "examples": examples,
        "epoch_examples": len(dataset),
        "iterate_s": time.perf_counter() - started,
    }


def child_in_memory(cache_dir: str, copies: int) -> dict:
    """The original recipes' approach: every document and example held in Python lists.

    Documents are read from our cache (the token ids the original would hold after its own
    tokenization); `copies` repeats the corpus. Examples follow create_instances_from_document
    with dupe_factor 1 and no masking (the original also stores masked copies: this is a floor).
    """
    import random

    import numpy as np

    from bert_lm.data.token_cache import TokenCache

    cache = TokenCache.open(cache_dir)
    baseline = reset_peak()
    started = time.perf_counter()
    tokens, sentence_offsets, document_offsets = cache.tokens(), cache.sentence_offsets(), cache.document_offsets()
    all_documents = []
    for _ in range(copies):
        for d in range(cache.num_documents):
            first, last = int(document_offsets[d]), int(document_offsets[d + 1])
            bounds = np.asarray(sentence_offsets[first : last + 1])
            all_documents.append([tokens[bounds[i] : bounds[i + 1]].tolist() for i in range(last - first)])
    del tokens, sentence_offsets, document_offsets
    rng = random.Random(0)
    instances = []
    max_num_tokens = MAX_LEN - 3
    for document_index, document in enumerate(all_documents):
        target = max_num_tokens if rng.random() >= 0.1 else rng.randint(2, max_num_tokens)
        chunk, length, i = [], 0, 0
        while i < len(document):
            chunk.append(document[i])
            length += len(document[i])
            if i == len(document) - 1 or length >= target:
                a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
                tokens_a = [t for sentence in chunk[:a_end] for t in sentence]
                if len(chunk) == 1 or rng.random() < 0.5:
                    other = rng.randint(0, len(all_documents) - 2)
                    other += other >= document_index
                    random_document = all_documents[other]
                    tokens_b = []
                    for sentence in random_document[rng.randint(0, len(random_document) - 1) :]:
                        tokens_b.extend(sentence)
                        if len(tokens_b) >= target - len(tokens_a):
                            break
                    i -= len(chunk) - a_end
                    is_random_next = True
                else:
                    tokens_b = [t for sentence in chunk[a_end:] for t in sentence]
                    is_random_next = False
                while len(tokens_a) + len(tokens_b) > max_num_tokens:
                    trunc = tokens_a if len(tokens_a) > len(tokens_b) else tokens_b
                    del trunc[0 if rng.random() < 0.5 else -1]
                example = [2] + tokens_a + [3] + tokens_b + [3]
                segment_ids = [0] * (len(tokens_a) + 2) + [1] * (len(tokens_b) + 1)
                instances.append((example, segment_ids, is_random_next))
                chunk, length = [], 0
            i += 1
    return {
        "baseline_mb": baseline,
        "growth_mb": rss_status()["VmHWM"] - baseline,
        "examples": len(instances),
        "seconds": time.perf_counter() - started,
    }


def run_child(*args) -> dict:
    result = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(args)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"child {args[0]} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------
# The parent: preparation, throughput, memory


def prepare(work: Path) -> tuple[Path, Path, float]:
    """Prepared corpus (train = all of petitions, ~10 MB) and a Mecab WordPiece trained on it."""
    from bert_lm.corpus.cleaning import CleaningConfig
    from bert_lm.corpus.prepare import PrepareSettings, prepare_corpus
    from bert_lm.tokenizer.korean_tokenizer import KoreanTokenizer

    settings = PrepareSettings(
        source="petitions", root=str(PETITIONS), file_pattern="petitions_*", split_sentences=True
    )
    prepare_corpus(settings, CleaningConfig(), work / "split", show_progress=False)
    prepared = work / "prepared"
    prepared.mkdir()
    with open(prepared / "train.txt", "wb") as out:  # the whole archive as train: the "10 MB corpus"
        for split in ("train", "valid"):
            out.write((work / "split" / f"{split}.txt").read_bytes())
    shutil.copy(work / "split" / "valid.txt", prepared / "valid.txt")
    lines = [line for line in (prepared / "train.txt").read_text(encoding="utf-8").splitlines() if line != "[EOD]"]
    tokenizer = KoreanTokenizer.train(lines, mecab=True, vocab_size=20_000, num_lines=len(lines), show_progress=False)
    tokenizer.save(work / "tokenizer")
    tokenizer.close()
    return prepared, work / "tokenizer", (prepared / "train.txt").stat().st_size / 1e6


def loader_rate(datamodule, batches: int) -> float:
    loader = datamodule.train_dataloader()
    iterator = iter(loader)
    for _ in range(3):  # worker start-up and first plan read are not steady state
        next(iterator)
    started, examples = time.perf_counter(), 0
    for _ in range(batches):
        examples += len(next(iterator)["input_ids"])
    return examples / (time.perf_counter() - started)


def training_step_rate(datamodule, vocab_size: int) -> tuple[float, str]:
    import torch
    import yaml

    batches = iter(datamodule.train_dataloader())
    model_yaml = yaml.safe_load((REPO_ROOT / "conf" / "model" / "small.yaml").read_text())
    model_yaml.pop("defaults", None)
    try:
        from bert_lm.models.bert import BertConfig, BertForPreTraining

        model = BertForPreTraining(BertConfig(**{**model_yaml, "vocab_size": vocab_size})).train()
        which = "bert_lm.models.bert.BertForPreTraining (model=small)"
    except ImportError:  # the model is another helper's file; a same-size stand-in if it is absent
        from transformers import BertConfig as HFConfig
        from transformers import BertForPreTraining as HFBert

        model = HFBert(HFConfig(**{**model_yaml, "vocab_size": vocab_size})).train()
        which = "stand-in: transformers BertForPreTraining of the same size"
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    keys = ("input_ids", "token_type_ids", "attention_mask", "mlm_labels", "nsp_labels")
    times = []
    for step in range(8):
        batch = {key: value for key, value in next(batches).items() if key in keys}
        started = time.perf_counter()
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step >= 2:  # warm-up steps excluded
            times.append(time.perf_counter() - started)
    return BATCH / sorted(times)[len(times) // 2], which


def replicate_cache(source_dir: Path, target_dir: Path, copies: int, corpus_bytes: float) -> None:
    """A cache of `copies` back-to-back copies of a corpus, written copy by copy."""
    import numpy as np

    from bert_lm.data.token_cache import TokenCache, TokenCacheWriter

    source = TokenCache.open(source_dir)
    writer = TokenCacheWriter(target_dir, source.token_dtype)
    tokens = np.asarray(source.tokens())
    lengths = np.diff(np.asarray(source.sentence_offsets()))
    ends_document = np.zeros(len(lengths), bool)
    ends_document[np.asarray(source.document_offsets())[1:] - 1] = True
    for _ in range(copies):
        writer.append(tokens, lengths, ends_document)
    writer.finish(
        {
            **{k: source.meta[k] for k in ("tokenizer_fingerprint", "vocab_size")},
            "corpus_path": f"{copies} x {source.meta['corpus_path']}",
            "corpus_bytes": corpus_bytes,
        }
    )


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        kind, *args = json.loads(sys.argv[2])
        print(json.dumps({"ours": child_ours, "in_memory": child_in_memory}[kind](*args)))
        return
    if not PETITIONS.exists():
        print(f"skip: {PETITIONS} is absent; this benchmark needs the petitions archive in ../shared/data")
        print("rss_growth_mb: nan")
        return

    from bert_lm.data.datamodule import PretrainingDataModule

    work = Path(tempfile.mkdtemp(prefix="data_pipeline_bench_"))
    try:
        started = time.perf_counter()
        prepared, tokenizer_dir, corpus_mb = prepare(work)
        print(
            f"prepared {corpus_mb:.1f} MB of petitions text and trained the tokenizer "
            f"in {time.perf_counter() - started:.0f} s; cores: {os.cpu_count()}, "
            f"load average {os.getloadavg()[0]:.1f} (timings are shared with whatever else runs)"
        )

        datamodule_options = dict(
            prepared_dir=prepared,
            tokenizer_dir=tokenizer_dir,
            cache_dir=work / "cache",
            max_len=MAX_LEN,
            batch_size=BATCH,
            seed=0,
        )
        started = time.perf_counter()
        PretrainingDataModule(**datamodule_options).prepare_data()
        build_s = time.perf_counter() - started
        datamodule = PretrainingDataModule(**datamodule_options)
        datamodule.setup("fit")
        train_cache = datamodule.train_dataset.cache
        stats = datamodule.example_stats()["train"]
        print(
            f"token cache: {train_cache.num_documents:,} documents, {train_cache.num_sentences:,} sentences, "
            f"{train_cache.num_tokens:,} tokens, built (tokenization with all cores + epoch-0 plans) in "
            f"{build_s:.0f} s; epoch: {stats['num_examples']:,} examples, "
            f"{stats['num_random_next'] / stats['num_examples']:.3f} random-next"
        )

        # (a) throughput
        rates = {}
        for workers, batches in ((0, 60), (2, 150)):
            loader_datamodule = PretrainingDataModule(
                **datamodule_options, num_workers=workers, persistent_workers=workers > 0
            )
            loader_datamodule.setup("fit")
            rates[workers] = loader_rate(loader_datamodule, batches)
        step_rate, model_name = training_step_rate(datamodule, train_cache.meta["vocab_size"])
        print(f"\n(a) loader at max_len {MAX_LEN}, batch {BATCH} (examples/s); training step of {model_name}")
        print(f"{'loader, 0 workers':<28} {rates[0]:>10,.0f}  {rates[0] / step_rate:>6.1f}x the step")
        print(f"{'loader, 2 workers':<28} {rates[2]:>10,.0f}  {rates[2] / step_rate:>6.1f}x the step")
        print(f"{'training step consumes':<28} {step_rate:>10,.0f}")

        # (b) memory
        print("\n(b) peak RSS growth while iterating an epoch (MB), num_workers=0")
        small = run_child("ours", str(train_cache.directory), str(tokenizer_dir), str(work / "plans_small"), None)
        in_memory = {copies: run_child("in_memory", str(train_cache.directory), copies) for copies in IN_MEMORY_COPIES}
        big_dir = work / "cache_1gb"
        started = time.perf_counter()
        replicate_cache(train_cache.directory, big_dir, BIG_CORPUS_COPIES, BIG_CORPUS_COPIES * corpus_mb * 1e6)
        replicate_s = time.perf_counter() - started
        big = run_child("ours", str(big_dir), str(tokenizer_dir), str(work / "plans_big"), BIG_CORPUS_SECONDS)
        big_mb = BIG_CORPUS_COPIES * corpus_mb
        token_gb = sum(f.stat().st_size for f in big_dir.iterdir()) / 1e9

        # Least-squares line through the in-memory measurements, extrapolated to the big corpus.
        xs = [copies * corpus_mb for copies in IN_MEMORY_COPIES]
        ys = [in_memory[copies]["growth_mb"] for copies in IN_MEMORY_COPIES]
        mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
        slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sum(
            (x - mean_x) ** 2 for x in xs
        )
        intercept = mean_y - slope * mean_x

        print(f"{'corpus':<34} {'ours':>8} {'in-memory lists':>16}")
        print(f"{f'{corpus_mb:.1f} MB, full epoch':<34} {small['growth_mb']:>8.1f} {in_memory[1]['growth_mb']:>16.0f}")
        for copies in IN_MEMORY_COPIES[1:]:
            print(f"{f'{copies * corpus_mb:.1f} MB':<34} {'':>8} {in_memory[copies]['growth_mb']:>16.0f}")
        big_label = f"{big_mb / 1000:.2f} GB, {big['examples']:,} examples"
        print(f"{big_label:<34} {big['growth_mb']:>8.1f} {slope * big_mb + intercept:>15,.0f}*")
        print(
            f"* extrapolated: {slope:.1f} MB per corpus MB {intercept:+.0f} MB (fit over "
            f"{', '.join(f'{x:.0f}' for x in xs)} MB)"
        )
        print(
            f"ours, {corpus_mb:.1f} MB: {small['epoch_examples']:,} examples in {small['iterate_s']:.1f} s, "
            f"plan {small['plan_s']:.2f} s"
        )
        print(
            f"ours, {big_mb / 1000:.2f} GB: cache of {token_gb:.2f} GB built by replication in {replicate_s:.0f} s; "
            f"epoch plan over all {big['epoch_examples']:,} examples in {big['plan_s']:.1f} s "
            f"(+{big['growth_after_plan_mb']:.1f} MB); {big['examples']:,} examples "
            f"({100 * big['examples'] / big['epoch_examples']:.1f} % of the epoch) in {big['iterate_s']:.1f} s"
        )
        print(
            f"in-memory, {corpus_mb:.1f} MB: {in_memory[1]['examples']:,} examples built in "
            f"{in_memory[1]['seconds']:.1f} s"
        )
        print(f"load average at the end: {os.getloadavg()[0]:.1f}")
        print(f"rss_growth_mb: {big['growth_mb']:.1f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

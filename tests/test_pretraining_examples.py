"""Epoch plans and examples, checked on synthetic corpora whose tokens name their sentence.

Every token of sentence s (numbered across the corpus) is FIRST_SENTENCE_ID + s, so an
example's tokens say which sentences of which documents it holds.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bert_lm.data.pretraining_examples import (
    PretrainingDataset,
    permute_positions,
    random_halves,
    truncation_counts,
)
from bert_lm.data.token_cache import TokenCache, TokenCacheWriter

CLS, SEP = 2, 3
FIRST_SENTENCE_ID = 10


def write_synthetic_cache(directory: Path, sentence_lengths: list[list[int]]) -> TokenCache:
    """A cache of documents given as lists of sentence lengths; tokens name their sentence."""
    writer = TokenCacheWriter(directory, np.uint32)
    sentence = 0
    for lengths in sentence_lengths:
        ids = np.repeat(FIRST_SENTENCE_ID + sentence + np.arange(len(lengths)), lengths)
        ends = np.zeros(len(lengths), bool)
        ends[-1] = True
        writer.append(ids, lengths, ends)
        sentence += len(lengths)
    writer.finish({"tokenizer_fingerprint": "synthetic"})
    return TokenCache.open(directory)


def make_dataset(cache: TokenCache, plan_root: Path, **overrides) -> PretrainingDataset:
    options = dict(max_len=32, train_nsp=True, short_seq_prob=0.1, nsp_prob=0.5, seed=0, cls_id=CLS, sep_id=SEP)
    return PretrainingDataset(cache, plan_root, **{**options, **overrides})


def document_of_sentences(sentence_lengths: list[list[int]]) -> np.ndarray:
    return np.repeat(np.arange(len(sentence_lengths)), [len(d) for d in sentence_lengths])


def all_examples(dataset: PretrainingDataset, epoch: int) -> list[dict]:
    plan_length = dataset.ensure_plan(epoch)
    return dataset.__getitems__([(epoch, p) for p in range(plan_length)])


def split_pair(example: dict) -> tuple[list[int], list[int]]:
    ids = example["input_ids"].tolist()
    assert ids[0] == CLS and ids[-1] == SEP and ids.count(SEP) == 2
    a_end = example["num_a_tokens"] - 1
    assert ids[a_end] == SEP
    sentences = [i - FIRST_SENTENCE_ID for i in ids]
    return sentences[1:a_end], sentences[a_end + 1 : -1]


corpora = st.lists(st.lists(st.integers(1, 24), min_size=1, max_size=8), min_size=2, max_size=25)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    sentence_lengths=corpora,
    max_len=st.integers(5, 48),
    short_seq_prob=st.sampled_from([0.0, 0.1, 1.0]),
    seed=st.integers(0, 3),
)
def test_nsp_pairs_respect_documents_and_lengths(tmp_path_factory, sentence_lengths, max_len, short_seq_prob, seed):
    tmp = tmp_path_factory.mktemp("nsp")
    cache = write_synthetic_cache(tmp / "cache", sentence_lengths)
    if sum(len(d) >= 2 for d in sentence_lengths) == 0:
        with pytest.raises(ValueError, match="no pretraining example"):
            make_dataset(cache, tmp / "plans", max_len=max_len)
        return
    dataset = make_dataset(cache, tmp / "plans", max_len=max_len, short_seq_prob=short_seq_prob, seed=seed)
    document = document_of_sentences(sentence_lengths)
    multi_sentence = {d for d, lengths in enumerate(sentence_lengths) if len(lengths) >= 2}
    for example in all_examples(dataset, epoch=seed):
        assert len(example["input_ids"]) <= max_len
        a, b = split_pair(example)
        assert a and b
        # Each segment is a run of consecutive sentences of one document (no [EOD] crossed).
        for segment in (a, b):
            assert np.all(np.diff(segment) >= 0) and np.all(np.diff(np.unique(segment)) == 1)
            assert len({document[s] for s in segment}) == 1
        assert document[a[0]] in multi_sentence  # one-sentence documents are never A
        if example["is_random_next"]:
            assert document[b[0]] != document[a[0]]
        else:
            assert document[b[0]] == document[a[0]] and b[0] > a[-1]


def test_positive_pairs_are_adjacent_and_every_sentence_is_used(tmp_path):
    rng = np.random.default_rng(1)
    sentence_lengths = [rng.integers(1, 20, rng.integers(1, 9)).tolist() for _ in range(200)]
    cache = write_synthetic_cache(tmp_path / "cache", sentence_lengths)
    dataset = make_dataset(cache, tmp_path / "plans", max_len=40)
    plan = np.load(dataset.plan_path(0), allow_pickle=False)
    positives = plan[plan["is_random_next"] == 0]
    assert np.all(positives["b_start"] == positives["a_start"] + positives["a_count"])  # B follows A
    # Each sentence of a multi-sentence document is in some A or positive B of the epoch.
    used = np.zeros(cache.num_sentences, bool)
    for start, count in [(plan["a_start"], plan["a_count"]), (positives["b_start"], positives["b_count"])]:
        for s, n in zip(start.tolist(), count.tolist(), strict=True):
            used[s : s + n] = True
    document = document_of_sentences(sentence_lengths)
    in_multi = np.isin(document, [d for d, lengths in enumerate(sentence_lengths) if len(lengths) >= 2])
    assert used[in_multi].all() and not used[~in_multi].any()


@pytest.mark.parametrize("nsp_prob", [0.5, 0.2])
def test_label_ratio_matches_nsp_prob(tmp_path, nsp_prob):
    rng = np.random.default_rng(2)
    sentence_lengths = [rng.integers(1, 30, rng.integers(1, 12)).tolist() for _ in range(1500)]
    cache = write_synthetic_cache(tmp_path / "cache", sentence_lengths)
    dataset = make_dataset(cache, tmp_path / "plans", max_len=64, nsp_prob=nsp_prob)
    stats = dataset.plan_stats(0)
    n = stats["num_examples"]
    ratio = stats["num_random_next"] / n
    assert abs(ratio - nsp_prob) < 4 * math.sqrt(nsp_prob * (1 - nsp_prob) / n)
    assert stats["num_borrowed_neighbours"] > 0  # the case the original made a forced negative


def test_epochs_are_deterministic_and_different(tmp_path):
    rng = np.random.default_rng(3)
    sentence_lengths = [rng.integers(1, 20, rng.integers(1, 8)).tolist() for _ in range(100)]
    cache = write_synthetic_cache(tmp_path / "cache", sentence_lengths)
    first = make_dataset(cache, tmp_path / "plans_a")
    second = make_dataset(cache, tmp_path / "plans_b")  # generated again from scratch

    def token_lists(dataset, epoch):
        return [e["input_ids"].tolist() for e in dataset.__getitems__([(epoch, p) for p in range(len(dataset))])]

    assert token_lists(first, 1) == token_lists(second, 1)
    assert first.plan_path(1).read_bytes() == second.plan_path(1).read_bytes()
    assert token_lists(first, 1) != token_lists(first, 2)
    other_seed = make_dataset(cache, tmp_path / "plans_a", seed=7)
    assert other_seed.plan_dir != first.plan_dir and token_lists(other_seed, 1) != token_lists(first, 1)
    # Every epoch has epoch 0's length; reading positions of an epoch hits each row at most once.
    rows = first.rows_for_positions(2, np.arange(len(first)))
    assert len(np.unique(rows)) == min(len(first), first.ensure_plan(2))
    # Old plans are deleted as epochs advance; epoch 0 and the last two stay.
    first.ensure_plan(4), first.ensure_plan(5)
    assert sorted(p.name for p in first.plan_dir.glob("*.npy")) == [
        "epoch-000000.npy",
        "epoch-000004.npy",
        "epoch-000005.npy",
    ]
    assert token_lists(first, 1) == token_lists(second, 1)  # a deleted plan is regenerated identically


def test_a_plan_dropped_by_another_run_between_check_and_read_is_rebuilt(tmp_path):
    """Two runs with the same data settings share one plan directory; the one ahead drops old plans,
    possibly right after the other checked that the plan it is about to read exists."""
    rng = np.random.default_rng(4)
    sentence_lengths = [rng.integers(1, 20, rng.integers(1, 8)).tolist() for _ in range(60)]
    cache = write_synthetic_cache(tmp_path / "cache", sentence_lengths)
    behind, ahead = make_dataset(cache, tmp_path / "plans"), make_dataset(cache, tmp_path / "plans")
    expected = [e["input_ids"].tolist() for e in behind.__getitems__([(2, p) for p in range(8)])]
    assert behind.plan_dir == ahead.plan_dir
    checked = behind.ensure_plan

    def check_then_lose_the_race(epoch):
        length = checked(epoch)
        ahead.ensure_plan(4)  # the other run reaches epoch 4 and drops epochs 1 and 2
        return length

    behind.ensure_plan = check_then_lose_the_race
    again = [e["input_ids"].tolist() for e in behind.__getitems__([(2, p) for p in range(8)])]
    assert not behind.plan_path(1).exists()  # dropped by the run ahead, as epoch 2 was
    assert behind.plan_path(2).exists() and again == expected  # epoch 2 rebuilt, identical


def test_sentence_longer_than_max_len_is_truncated(tmp_path):
    cache = write_synthetic_cache(tmp_path / "cache", [[5, 200, 4], [3, 3], [250]])
    dataset = make_dataset(cache, tmp_path / "plans", max_len=16, short_seq_prob=0.0)
    assert dataset.plan_stats(0)["num_long_sentences"] == 2
    for epoch in range(5):
        for example in all_examples(dataset, epoch):
            assert len(example["input_ids"]) <= 16
            split_pair(example)


def test_nsp_needs_two_documents(tmp_path):
    cache = write_synthetic_cache(tmp_path / "cache", [[4, 5, 6]])
    with pytest.raises(ValueError, match="at least two documents"):
        make_dataset(cache, tmp_path / "plans")
    make_dataset(cache, tmp_path / "plans", train_nsp=False)  # spans need no second document


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sentence_lengths=corpora, max_len=st.integers(5, 48), short_seq_prob=st.sampled_from([0.0, 0.5]))
def test_spans_cover_each_document_once(tmp_path_factory, sentence_lengths, max_len, short_seq_prob):
    tmp = tmp_path_factory.mktemp("spans")
    cache = write_synthetic_cache(tmp / "cache", sentence_lengths)
    dataset = make_dataset(cache, tmp / "plans", max_len=max_len, train_nsp=False, short_seq_prob=short_seq_prob)
    document = document_of_sentences(sentence_lengths)
    seen = []
    for example in all_examples(dataset, epoch=0):
        ids = example["input_ids"].tolist()
        assert ids[0] == CLS and ids[-1] == SEP and len(ids) <= max_len and "is_random_next" not in example
        assert example["num_a_tokens"] == len(ids)  # one segment
        body = [i - FIRST_SENTENCE_ID for i in ids[1:-1]]
        assert len({document[s] for s in body}) == 1
        seen += body
    expected = np.repeat(np.arange(len(document)), np.concatenate(sentence_lengths))
    assert sorted(seen) == expected.tolist()  # every token exactly once per epoch


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    sentence_lengths=st.lists(st.lists(st.integers(1, 12), min_size=1, max_size=3), min_size=1, max_size=40),
    max_len=st.integers(5, 48),
    short_seq_prob=st.sampled_from([0.0, 0.5]),
)
def test_packed_spans_are_the_document_stream_cut_in_order(tmp_path_factory, sentence_lengths, max_len, short_seq_prob):
    """Unshuffled, the packed examples of an epoch read back the corpus in order: every token
    once, a [SEP] exactly where one document gives way to the next, never at a span's edge."""
    tmp = tmp_path_factory.mktemp("packed")
    cache = write_synthetic_cache(tmp / "cache", sentence_lengths)
    dataset = make_dataset(
        cache,
        tmp / "plans",
        max_len=max_len,
        train_nsp=False,
        pack_documents=True,
        short_seq_prob=short_seq_prob,
        shuffle=False,
    )
    document = document_of_sentences(sentence_lengths)
    examples = all_examples(dataset, epoch=0)
    tokens, previous_document = [], None
    for number, example in enumerate(examples):
        ids = example["input_ids"].tolist()
        assert ids[0] == CLS and ids[-1] == SEP and len(ids) <= max_len and example["num_a_tokens"] == len(ids)
        body = ids[1:-1]
        assert body and body[0] != SEP and body[-1] != SEP
        if short_seq_prob == 0 and number < len(examples) - 1:
            # Full length, less at most the two separators dropped at the edges.
            assert len(body) >= max_len - 4
        for i, token in enumerate(body):
            if token == SEP:
                before, after = document[body[i - 1] - FIRST_SENTENCE_ID], document[body[i + 1] - FIRST_SENTENCE_ID]
                assert after == before + 1
                continue
            current = document[token - FIRST_SENTENCE_ID]
            if i > 0 and body[i - 1] != SEP:
                assert current == previous_document  # documents change only at a [SEP]
            previous_document = current
            tokens.append(token - FIRST_SENTENCE_ID)
    expected = np.repeat(np.arange(len(document)), np.concatenate(sentence_lengths))
    assert tokens == expected.tolist()  # every token once, in corpus order
    stats = dataset.plan_stats(0)
    assert stats["num_examples"] == len(examples)
    assert stats["num_examples_across_documents"] == sum(SEP in e["input_ids"][1:-1].tolist() for e in examples)


def test_packing_fills_sequences_of_short_documents(tmp_path):
    """Twenty 3-token documents: one span each unpacked, three full spans when packed."""
    cache = write_synthetic_cache(tmp_path / "cache", [[3]] * 20)
    options = dict(max_len=32, train_nsp=False, short_seq_prob=0.0)
    unpacked = all_examples(make_dataset(cache, tmp_path / "plans", **options), epoch=0)
    packed = all_examples(make_dataset(cache, tmp_path / "plans", pack_documents=True, **options), epoch=0)
    assert [len(e["input_ids"]) for e in unpacked] == [5] * 20
    # The stream is 20 * 3 tokens + 19 separators = 79 items, cut at 30 and 60; item 59 is
    # document 14's separator, dropped at the end of the second span.
    assert sorted(len(e["input_ids"]) for e in packed) == [21, 31, 32]
    assert sum((e["input_ids"] == SEP).sum() - 1 for e in packed) == 19 - 1


def test_packing_refuses_nsp(tmp_path):
    cache = write_synthetic_cache(tmp_path / "cache", [[3, 3], [4, 4]])
    with pytest.raises(ValueError, match="pack_documents needs train_nsp=False"):
        make_dataset(cache, tmp_path / "plans", train_nsp=True, pack_documents=True)


@given(num_items=st.integers(1, 5000), key=st.integers(0, 2**64 - 1))
def test_permutation_is_a_bijection(num_items, key):
    permuted = permute_positions(np.arange(num_items), num_items, key)
    assert np.array_equal(np.sort(permuted), np.arange(num_items))


@given(len_a=st.integers(1, 300), len_b=st.integers(1, 300), max_tokens=st.integers(2, 200))
def test_truncation_counts_match_the_original_loop(len_a, len_b, max_tokens):
    a, b = len_a, len_b
    while a + b > max_tokens:  # truncate_seq_pair of create_pretraining_data.py
        if a > b:
            a -= 1
        else:
            b -= 1
    trim_a, trim_b = truncation_counts(np.array([len_a]), np.array([len_b]), max_tokens)
    assert (len_a - trim_a[0], len_b - trim_b[0]) == (a, b)


def test_random_halves_are_binomial():
    counts = np.full(20_000, 100)
    fronts = random_halves(counts, np.arange(20_000, dtype=np.uint64))
    assert fronts.min() >= 0 and fronts.max() <= 100
    assert abs(fronts.mean() - 50) < 0.2 and abs(fronts.var() - 25) < 1.5
    assert random_halves(np.array([0, 1, 64, 65]), np.arange(4, dtype=np.uint64)).tolist()[0] == 0

"""Pretraining examples drawn afresh every epoch from a token cache.

With NSP (train_nsp=True) this follows create_instances_from_document of google-research/
bert's create_pretraining_data.py:

* target length max_len - 3; with probability short_seq_prob a shorter target drawn
  uniformly from [2, max_len - 3] (drawn per example; the original draws it once per
  document, so one long document got only short or only full examples);
* sentences of one document accumulate until they reach the target (or the document
  ends); the chunk is split at a uniformly random sentence into A and B;
* with probability nsp_prob B is replaced by sentences of another document, from a
  random start sentence up to target - len(A) tokens, and the chunk's unused sentences
  are put back for the next example (label is_random_next = 1);
* the longer of A and B loses tokens until len(A) + len(B) <= max_len - 3, each one from
  the front or the back with equal probability (truncate_seq_pair);
* [CLS] A [SEP] B [SEP], token_type_ids 0 over [CLS] A [SEP] and 1 over B [SEP].
A pair never spans a document end: A and a positive B come from one chunk, and a chunk
never passes its document's last sentence.

Decisions where the recipe is silent or unusable as is:

* The original makes every one-sentence chunk a negative, which on short documents
  pushes the share of negatives well above nsp_prob (0.59 instead of 0.5 on a synthetic
  corpus of 1-11-sentence documents). Here the label is drawn with nsp_prob for every
  chunk; a one-sentence chunk drawn positive (a document's last sentence, or a sentence
  that reaches the target alone) borrows a neighbour from its document: the next
  sentence as B, or at the document's end the previous sentence as A, which then occurs
  in two examples of the epoch (counted as `num_borrowed_neighbours`).
* One-sentence documents cannot give a positive pair. They produce no examples of their
  own (they would be negatives only, skewing the label ratio by their share) but are
  still drawn as B of negatives; counted as `num_one_sentence_documents`.
* Sentences longer than max_len - 3 are truncated like any over-long pair, and counted
  (`num_long_sentences`); the token cache already cut sentences to max_sentence_tokens.
* Without NSP (train_nsp=False) an example is a contiguous token span of one document,
  [CLS] span [SEP], of max_len - 2 tokens (a shorter target with short_seq_prob, as
  above, so the NSP ablation changes nothing else); spans may start mid-sentence, so no
  token is wasted; a document's last span is shorter. One-sentence documents are spans
  like any other.
* Packed spans (train_nsp=False, pack_documents=True): RoBERTa's FULL-SENTENCES input,
  HF run_mlm's group_texts. Documents are read as one stream in cache order, each followed
  by a [SEP], and cut into spans of max_len - 2 items (shorter with short_seq_prob), so a
  span may hold the end of one document, [SEP], and the start of the next. For corpora of
  short documents (comments, one per line) this fills every sequence instead of padding a
  batch of 20-token comments to its longest. A span never starts or ends with the
  separator (it is dropped there: [CLS] and the closing [SEP] already mark the edges), and
  attention is not blocked between the documents of a span, as in RoBERTa.

Plans. An epoch's examples are a compact table ("plan") of sentence ranges, generated
from (seed, epoch) by a loop that advances all documents at once (numpy, one step per
example of the longest document, over blocks of 2**18 sentences) and written to a .npy
file next to the token cache. Workers read the rows of a batch with positional reads
(token_cache.ArrayFile), as they read offsets and tokens: nothing that grows with the
corpus stays in memory (the planner holds 8 bytes per document, the document offsets). Each epoch
draws new chunks, splits, negatives and truncations, so no two epochs repeat an
example unless the corpus forces it, and masks (drawn in the collator) differ too.
Order within an epoch is a keyed pseudo-random permutation (a Feistel network over
positions) computed on the fly, so a shuffled epoch costs no index array either.

Epoch length. Lightning needs one length for every epoch, but an epoch's example count
varies with its random draws (by a fraction of a percent on real data). Every epoch
therefore has the example count of epoch 0: an epoch that drew more examples leaves out
its surplus (the permutation decides which), one that drew fewer repeats the first few
of its own shuffled order.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from bert_lm.data.token_cache import ArrayFile, NpyAppender, TokenCache

log = logging.getLogger(__name__)

PLAN_FORMAT_VERSION = 1

# One NSP example in sentence indices of the cache. B is b_start.. accumulating sentences
# until b_target tokens are reached, at most b_count sentences: for a positive pair b_count
# is exact; for a negative it is what remains of the random document, and the stopping
# point is found when the example is read, so planning never touches other documents'
# sentence offsets (random access over the whole corpus would map all of it).
NSP_PAIR_DTYPE = np.dtype(
    [
        ("a_start", "<i8"),
        ("a_count", "<u4"),
        ("b_start", "<i8"),
        ("b_count", "<u4"),
        ("b_target", "<u4"),
        ("is_random_next", "u1"),
    ]
)
# One span example without NSP, in token offsets of the cache.
SPAN_DTYPE = np.dtype([("token_start", "<i8"), ("token_count", "<u4")])
# One packed span: `count` items of the stream "document 0, [SEP], document 1, [SEP], ..."
# from `stream_start`, touching documents first_document .. first_document + document_count - 1.
# Document d starts at stream position token_start(d) + d (one separator per earlier document).
PACKED_SPAN_DTYPE = np.dtype(
    [("stream_start", "<i8"), ("count", "<u4"), ("first_document", "<i8"), ("document_count", "<u4")]
)

_MASK64 = (1 << 64) - 1


def splitmix64(values: np.ndarray) -> np.ndarray:
    """A 64-bit mixing function (SplitMix64's finalizer); uint64 arithmetic wraps."""
    z = np.asarray(values, np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def mix_seed(*values: int) -> int:
    """Combine integers (seed, epoch, position, ...) into one well-mixed 64-bit seed."""
    state = np.zeros(1, np.uint64)
    for value in values:
        state = splitmix64(state ^ np.uint64(int(value) & _MASK64))
    return int(state[0])


def permute_positions(positions: np.ndarray, num_items: int, key: int) -> np.ndarray:
    """A keyed bijection of [0, num_items), applied to `positions`.

    A 4-round Feistel network on the smallest even number of bits that covers num_items,
    with cycle walking to stay inside the range: a shuffled epoch without materializing a
    permutation (torch's randperm would hold 8 bytes per example).
    """
    positions = np.asarray(positions, np.uint64)
    bits = max(2, int(num_items - 1).bit_length())
    bits += bits % 2
    half = np.uint64(bits // 2)
    low_mask = np.uint64((1 << (bits // 2)) - 1)
    round_keys = [np.uint64(mix_seed(key, r)) for r in range(4)]

    def encrypt(x: np.ndarray) -> np.ndarray:
        left, right = x >> half, x & low_mask
        for round_key in round_keys:
            left, right = right, left ^ (splitmix64(right ^ round_key) & low_mask)
        return (left << half) | right

    out = encrypt(positions)
    outside = out >= np.uint64(num_items)
    while outside.any():
        out[outside] = encrypt(out[outside])
        outside = out >= np.uint64(num_items)
    return out.astype(np.int64)


def truncation_counts(len_a: np.ndarray, len_b: np.ndarray, max_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """Tokens truncate_seq_pair removes from A and from B, in closed form.

    The original removes one token at a time from the longer side, B on ties: the longer
    side shrinks to the other's length, then they alternate starting with B.
    """
    len_a, len_b = np.asarray(len_a, np.int64), np.asarray(len_b, np.int64)
    excess = np.maximum(len_a + len_b - max_tokens, 0)
    gap = np.abs(len_a - len_b)
    first = np.minimum(excess, gap)  # taken from the longer side alone
    rest = excess - first
    trim_a = np.where(len_a > len_b, first, 0) + rest // 2
    trim_b = np.where(len_a > len_b, 0, first) + rest - rest // 2
    return trim_a, trim_b


def random_halves(counts: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Binomial(count, 1/2) per entry, as the popcount of `count` hashed bits of its key.

    Each token truncate_seq_pair removes comes from the front or the back with equal
    probability, so the number removed from the front is Binomial(count, 1/2).
    """
    counts = np.asarray(counts, np.int64)
    out = np.zeros(len(counts), np.int64)
    for word in range(int(-(-counts.max() // 64)) if len(counts) else 0):
        bits = splitmix64(np.asarray(keys, np.uint64) ^ np.uint64(mix_seed(word)))
        take = np.clip(counts - 64 * word, 0, 64)
        mask = np.where(take >= 64, np.uint64(_MASK64), (np.uint64(1) << take.astype(np.uint64)) - np.uint64(1))
        out += np.bitwise_count(bits & mask).astype(np.int64)
    return out


# ---------------------------------------------------------------------------------------
# Planning an epoch


def _document_blocks(document_offsets: np.ndarray, block_sentences: int):
    """Ranges [d0, d1) of whole documents holding about block_sentences sentences each."""
    num_documents = len(document_offsets) - 1
    d0 = 0
    while d0 < num_documents:
        d1 = int(np.searchsorted(document_offsets, document_offsets[d0] + block_sentences, side="right")) - 1
        d1 = min(max(d1, d0 + 1), num_documents)
        yield d0, d1
        d0 = d1


def _document_token_starts(cache: TokenCache, block_sentences: int):
    """(d0, d1, token offsets of documents d0..d1 inclusive) over blocks of whole documents:
    a block's documents d0..d1-1 span tokens [starts[i], starts[i + 1])."""
    with cache.open_document_offsets() as f:
        document_offsets = f.read(0, len(f))
    with cache.open_sentence_offsets() as f:
        for d0, d1 in _document_blocks(document_offsets, block_sentences):
            s0, s1 = int(document_offsets[d0]), int(document_offsets[d1])
            offsets = f.read(s0, s1 + 1)
            yield d0, d1, offsets[document_offsets[d0 : d1 + 1] - s0]


def _draw_targets(rng: np.random.Generator, count: int, max_tokens: int, short_seq_prob: float) -> np.ndarray:
    targets = np.full(count, max_tokens, np.int64)
    short = rng.random(count) < short_seq_prob
    targets[short] = rng.integers(2, max_tokens + 1, int(short.sum()))
    return targets


def plan_nsp_pairs(
    cache: TokenCache,
    rng: np.random.Generator,
    out: NpyAppender,
    max_len: int,
    short_seq_prob: float,
    nsp_prob: float,
    block_sentences: int = 1 << 18,
) -> dict:
    """Append one epoch of NSP pairs (NSP_PAIR_DTYPE) to `out`; returns statistics."""
    max_tokens = max_len - 3
    stats = {
        "num_examples": 0,
        "num_random_next": 0,
        "num_borrowed_neighbours": 0,
        "num_long_sentences": 0,
        "num_one_sentence_documents": 0,
    }
    # (num_documents + 1,) in memory: negatives pick documents anywhere in the corpus. It is
    # 8 bytes per document, and random reads through a map would make it resident anyway.
    with cache.open_document_offsets() as f:
        document_offsets = f.read(0, len(f))
    num_documents = len(document_offsets) - 1
    if num_documents < 2:
        corpus = cache.meta.get("corpus_path", cache.directory)
        raise ValueError(f"{corpus}: NSP needs at least two documents, the corpus has {num_documents}")
    for d0, d1 in _document_blocks(document_offsets, block_sentences):
        s0, s1 = int(document_offsets[d0]), int(document_offsets[d1])
        with cache.open_sentence_offsets() as f:
            offsets = f.read(s0, s1 + 1)  # (s1 - s0 + 1,) token offsets of this block's sentences
        stats["num_long_sentences"] += int((np.diff(offsets) > max_tokens).sum())
        first, last = document_offsets[d0:d1], document_offsets[d0 + 1 : d1 + 1]  # last: exclusive
        documents = np.arange(d0, d1)
        multi = last - first >= 2
        stats["num_one_sentence_documents"] += int((~multi).sum())
        position, end, document = first[multi], last[multi], documents[multi]
        while len(position):
            lanes = len(position)
            target = _draw_targets(rng, lanes, max_tokens, short_seq_prob)
            # The chunk ends with the first sentence that brings it to the target.
            chunk_end = np.searchsorted(offsets, offsets[position - s0] + target, side="left") + s0
            chunk_end = np.clip(chunk_end, position + 1, end)
            is_random_next = rng.random(lanes) < nsp_prob
            # A one-sentence chunk drawn positive borrows a neighbour from its document:
            # the next sentence as B, or at the document's end the previous one as A.
            single_positive = (chunk_end - position == 1) & ~is_random_next
            borrow_next = single_positive & (chunk_end < end)
            borrow_previous = single_positive & ~borrow_next
            chunk_end[borrow_next] += 1
            a_start = position - borrow_previous
            chunk_sentences = chunk_end - a_start
            a_count = np.ones(lanes, np.int64)
            splittable = chunk_sentences >= 2
            a_count[splittable] = rng.integers(1, chunk_sentences[splittable])  # in [1, n - 1]
            len_a = offsets[a_start + a_count - s0] - offsets[a_start - s0]

            b_start = a_start + a_count
            b_count = chunk_end - b_start
            negatives = np.flatnonzero(is_random_next)
            other = rng.integers(0, num_documents - 1, len(negatives))
            other += other >= document[negatives]  # any document but this one
            other_first, other_last = document_offsets[other], document_offsets[other + 1]
            b_start[negatives] = rng.integers(other_first, other_last)
            b_count[negatives] = other_last - b_start[negatives]

            rows = np.empty(lanes, NSP_PAIR_DTYPE)
            rows["a_start"], rows["a_count"] = a_start, a_count
            rows["b_start"], rows["b_count"] = b_start, b_count
            rows["b_target"] = np.maximum(target - len_a, 1)  # B gets at least one sentence
            rows["is_random_next"] = is_random_next
            out.append(rows)
            stats["num_examples"] += lanes
            stats["num_random_next"] += len(negatives)
            stats["num_borrowed_neighbours"] += int(single_positive.sum())

            # A negative puts its chunk's unused sentences back.
            position = np.where(is_random_next, a_start + a_count, chunk_end)
            active = position < end
            position, end, document = position[active], end[active], document[active]
    return stats


def plan_spans(
    cache: TokenCache,
    rng: np.random.Generator,
    out: NpyAppender,
    max_len: int,
    short_seq_prob: float,
    block_sentences: int = 1 << 18,
) -> dict:
    """Append one epoch of single-segment spans (SPAN_DTYPE) to `out`; returns statistics."""
    max_tokens = max_len - 2
    stats = {"num_examples": 0}
    for _, _, token_starts in _document_token_starts(cache, block_sentences):
        position, end = token_starts[:-1], token_starts[1:]
        while len(position):
            count = np.minimum(_draw_targets(rng, len(position), max_tokens, short_seq_prob), end - position)
            rows = np.empty(len(position), SPAN_DTYPE)
            rows["token_start"], rows["token_count"] = position, count
            out.append(rows)
            stats["num_examples"] += len(rows)
            position = position + count
            active = position < end
            position, end = position[active], end[active]
    return stats


def _document_stream_starts(cache: TokenCache, block_sentences: int) -> np.ndarray:
    """Stream position of every document's first token, and the stream's length, last:
    token_start(d) + d, since each earlier document is followed by one separator."""
    with cache.open_document_offsets() as f:
        token_starts = np.empty(len(f), np.int64)
    for d0, d1, block_starts in _document_token_starts(cache, block_sentences):
        token_starts[d0 : d1 + 1] = block_starts
    return token_starts + np.arange(len(token_starts))


def plan_packed_spans(
    cache: TokenCache,
    rng: np.random.Generator,
    out: NpyAppender,
    max_len: int,
    short_seq_prob: float,
    block_sentences: int = 1 << 18,
    block_examples: int = 1 << 16,
) -> dict:
    """Append one epoch of packed spans (PACKED_SPAN_DTYPE) to `out`; returns statistics.

    Holds 8 bytes per document (their stream starts), as plan_spans holds their offsets."""
    max_tokens = max_len - 2
    starts = _document_stream_starts(cache, block_sentences)
    # The last document's separator would only be dropped again: the stream ends before it.
    stream_length = int(starts[-1]) - 1
    stats = {"num_examples": 0, "num_examples_across_documents": 0}
    position = 0
    while position < stream_length:
        counts = _draw_targets(rng, block_examples, max_tokens, short_seq_prob)
        begin = position + np.concatenate([[0], np.cumsum(counts[:-1])])
        keep = begin < stream_length
        begin, counts = begin[keep], np.minimum(counts[keep], stream_length - begin[keep])
        first = np.searchsorted(starts, begin, side="right") - 1
        last = np.searchsorted(starts, begin + counts - 1, side="right") - 1
        rows = np.empty(len(begin), PACKED_SPAN_DTYPE)
        rows["stream_start"], rows["count"] = begin, counts
        rows["first_document"], rows["document_count"] = first, last - first + 1
        out.append(rows)
        stats["num_examples"] += len(rows)
        # A span that starts on a separator holds tokens from the next document on.
        first_with_tokens = first + (begin == starts[first + 1] - 1)
        stats["num_examples_across_documents"] += int((last > first_with_tokens).sum())
        position = int(begin[-1] + counts[-1])
    return stats


# ---------------------------------------------------------------------------------------
# The dataset


class PretrainingDataset(Dataset):
    """Map-style dataset over one epoch's plan; keys are (epoch, position) pairs.

    `position` in [0, len(self)) is the rank of the example in the epoch's order (the
    sampler decides which positions a process reads); the dataset maps it to a plan row,
    shuffled unless `shuffle=False`. Epoch plans are generated on first use: call
    `ensure_plan(epoch)` in the main process (the sampler does) so workers only read.
    `fixed_epoch` pins every key to one plan (validation: same examples every time).
    """

    def __init__(
        self,
        cache: TokenCache,
        plan_root: str | os.PathLike,
        *,
        max_len: int,
        train_nsp: bool,
        short_seq_prob: float,
        nsp_prob: float,
        seed: int,
        cls_id: int,
        sep_id: int,
        shuffle: bool = True,
        fixed_epoch: int | None = None,
        keep_plans: int = 2,
        pack_documents: bool = False,
    ):
        if max_len < 5:
            raise ValueError(f"max_len must be at least 5, got {max_len}")
        if pack_documents and train_nsp:
            raise ValueError(
                "pack_documents needs train_nsp=False: a packed span mixes documents, so it cannot be an NSP pair"
            )
        if not 0.0 <= short_seq_prob <= 1.0 or not 0.0 <= nsp_prob <= 1.0:
            raise ValueError("short_seq_prob and nsp_prob must lie in [0, 1]")
        self.cache = cache
        self.max_len = max_len
        self.train_nsp = train_nsp
        self.short_seq_prob = short_seq_prob
        self.nsp_prob = nsp_prob
        self.seed = seed
        self.cls_id, self.sep_id = cls_id, sep_id
        self.shuffle = shuffle
        self.fixed_epoch = fixed_epoch
        self.keep_plans = keep_plans
        self.pack_documents = pack_documents
        settings = {
            "format_version": PLAN_FORMAT_VERSION,
            "cache_build_id": cache.meta["build_id"],
            "max_len": max_len,
            "train_nsp": train_nsp,
            "short_seq_prob": short_seq_prob,
            "nsp_prob": nsp_prob if train_nsp else None,
            "seed": seed,
        }
        if pack_documents:  # only when set, so that existing plans keep their keys
            settings["pack_documents"] = True
        key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
        self.plan_dir = Path(plan_root) / f"{cache.directory.name}-{key}"
        self._plan_lengths: dict[int, int] = {}
        self.examples_per_epoch = self.ensure_plan(self._epoch_of(0))

    # -- plans ---------------------------------------------------------------------------

    def _epoch_of(self, epoch: int) -> int:
        return epoch if self.fixed_epoch is None else self.fixed_epoch

    def plan_path(self, epoch: int) -> Path:
        return self.plan_dir / f"epoch-{epoch:06d}.npy"

    def ensure_plan(self, epoch: int) -> int:
        """Generate the plan for `epoch` unless it exists; returns its number of examples."""
        epoch = self._epoch_of(epoch)
        path = self.plan_path(epoch)
        if not path.exists():
            self._write_plan(epoch, path)
            self._drop_old_plans(epoch)
        return self._plan_length(epoch)

    def plan_stats(self, epoch: int) -> dict:
        self.ensure_plan(epoch)
        with open(self.plan_path(self._epoch_of(epoch)).with_suffix(".json")) as f:
            return json.load(f)

    def _write_plan(self, epoch: int, path: Path) -> None:
        self.plan_dir.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".tmp-{path.stem}-{uuid.uuid4().hex[:8]}.npy")
        rng = np.random.default_rng([self.seed, epoch])
        dtype = NSP_PAIR_DTYPE if self.train_nsp else PACKED_SPAN_DTYPE if self.pack_documents else SPAN_DTYPE
        out = NpyAppender(temporary, dtype)
        try:
            if self.train_nsp:
                stats = plan_nsp_pairs(self.cache, rng, out, self.max_len, self.short_seq_prob, self.nsp_prob)
            elif self.pack_documents:
                stats = plan_packed_spans(self.cache, rng, out, self.max_len, self.short_seq_prob)
            else:
                stats = plan_spans(self.cache, rng, out, self.max_len, self.short_seq_prob)
            out.close()
        except BaseException:
            out.abandon()
            temporary.unlink(missing_ok=True)
            raise
        if stats["num_examples"] == 0:
            temporary.unlink()
            corpus = self.cache.meta.get("corpus_path", self.cache.directory)
            raise ValueError(
                f"{corpus}: no pretraining example can be made from this corpus (with NSP, every "
                "document has a single sentence)"
            )
        stats_path = path.with_suffix(".json")
        with open(stats_path.with_name(f".tmp-{stats_path.name}-{uuid.uuid4().hex[:8]}"), "w") as f:
            json.dump({"epoch": epoch, "seed": self.seed, **stats}, f, indent=1)
        os.replace(f.name, stats_path)
        os.replace(temporary, path)  # last: an existing .npy means a complete plan
        if stats.get("num_long_sentences"):
            log.info(
                "epoch %d plan: %d sentences longer than max_len - 3 = %d are truncated in their examples",
                epoch,
                stats["num_long_sentences"],
                self.max_len - 3,
            )

    def _drop_old_plans(self, epoch: int) -> None:
        # Keep epoch 0 (it fixes the epoch length) and the last `keep_plans` epochs.
        for old in self.plan_dir.glob("epoch-*.npy"):
            old_epoch = int(old.stem.split("-")[1])
            if 0 < old_epoch <= epoch - self.keep_plans:
                old.unlink(missing_ok=True)
                old.with_suffix(".json").unlink(missing_ok=True)
                self._plan_lengths.pop(old_epoch, None)

    def _plan_length(self, epoch: int) -> int:
        if epoch not in self._plan_lengths:
            with self._open_plan(epoch) as plan:
                self._plan_lengths[epoch] = len(plan)
        return self._plan_lengths[epoch]

    def _open_plan(self, epoch: int, attempts: int = 3) -> ArrayFile:
        """The plan of ``epoch``, opened. Runs with the same data settings and seed share a plan
        directory, and one that is two epochs ahead drops old plans: between our check that the
        plan exists and its opening it may be gone. It is rebuilt then (identical: same seed)."""
        path = self.plan_path(epoch)
        for _ in range(attempts - 1):
            try:
                return ArrayFile(path)
            except FileNotFoundError:
                self._write_plan(epoch, path)
        return ArrayFile(path)

    # -- reading -------------------------------------------------------------------------

    def __len__(self) -> int:
        return self.examples_per_epoch

    def rows_for_positions(self, epoch: int, positions: np.ndarray) -> np.ndarray:
        """Plan rows read at `positions` of `epoch` (the epoch's order)."""
        epoch = self._epoch_of(epoch)
        plan_length = self.ensure_plan(epoch)
        positions = np.asarray(positions, np.int64) % plan_length  # wrap: this epoch drew fewer examples
        if not self.shuffle:
            return positions
        return permute_positions(positions, plan_length, mix_seed(self.seed, epoch, 0x5EED))

    def __getitem__(self, key) -> dict:
        return self.__getitems__([key])[0]

    def __getitems__(self, keys: list) -> list[dict]:
        """Read a batch of examples; maps are opened once per batch and dropped after."""
        keys = [(0, key) if np.isscalar(key) else key for key in keys]
        epoch = self._epoch_of(keys[0][0])
        if any(self._epoch_of(e) != epoch for e, _ in keys):
            return [example for key in keys for example in self.__getitems__([key])]
        positions = np.array([position for _, position in keys], np.int64)
        rows = self.rows_for_positions(epoch, positions)
        with self._open_plan(epoch) as plan:
            records = plan.take(rows)
        read = self._read_pairs if self.train_nsp else self._read_packed if self.pack_documents else self._read_spans
        examples = read(records, rows, epoch)
        for example, row, position in zip(examples, rows, positions, strict=True):
            example["example_index"] = int(row)
            example["epoch"] = epoch
            example["position"] = int(position)
        return examples

    def _read_spans(self, records: np.ndarray, rows: np.ndarray, epoch: int) -> list[dict]:
        examples = []
        with self.cache.open_tokens() as tokens:
            for start, count in zip(records["token_start"].tolist(), records["token_count"].tolist(), strict=True):
                input_ids = np.empty(count + 2, np.int32)
                input_ids[0], input_ids[-1] = self.cls_id, self.sep_id
                input_ids[1:-1] = tokens.read(start, start + count)
                examples.append({"input_ids": input_ids, "num_a_tokens": count + 2})
        return examples

    def _read_packed(self, records: np.ndarray, rows: np.ndarray, epoch: int) -> list[dict]:
        examples = []
        with (
            self.cache.open_document_offsets() as document_offsets,
            self.cache.open_sentence_offsets() as sentence_offsets,
            self.cache.open_tokens() as tokens,
        ):
            for start, count, first, num_documents in zip(
                records["stream_start"].tolist(),
                records["count"].tolist(),
                records["first_document"].tolist(),
                records["document_count"].tolist(),
                strict=True,
            ):
                # Token offsets of the span's documents and of the one after the last.
                bounds = sentence_offsets.take(document_offsets.read(first, first + num_documents + 1))
                stop = start + count
                pieces = []
                for j in range(num_documents):
                    stream_begin = int(bounds[j]) + first + j  # this document's first token in the stream
                    separator = int(bounds[j + 1]) + first + j  # the [SEP] after it
                    lo, hi = max(start, stream_begin), min(stop, separator)
                    if lo < hi:
                        pieces.append(
                            tokens.read(int(bounds[j]) + lo - stream_begin, int(bounds[j]) + hi - stream_begin)
                        )
                    if start < separator < stop - 1 and lo < hi:  # a separator between two documents' tokens
                        pieces.append(np.array([self.sep_id]))
                body = np.concatenate(pieces) if pieces else np.empty(0, np.int32)
                input_ids = np.empty(len(body) + 2, np.int32)
                input_ids[0], input_ids[-1] = self.cls_id, self.sep_id
                input_ids[1:-1] = body
                examples.append({"input_ids": input_ids, "num_a_tokens": len(input_ids)})
        return examples

    def _read_pairs(self, records: np.ndarray, rows: np.ndarray, epoch: int) -> list[dict]:
        a_start, b_start = records["a_start"].astype(np.int64), records["b_start"].astype(np.int64)
        with self.cache.open_sentence_offsets() as sentence_offsets:
            bounds = sentence_offsets.take(
                np.concatenate([a_start, a_start + records["a_count"], b_start, b_start + records["b_count"]])
            )
            a_begin, a_end, b_begin, b_end = bounds.reshape(4, len(records))
            for i in np.flatnonzero(records["is_random_next"]):
                # B of a negative: sentences from b_start until b_target tokens (at least one).
                window = min(int(records["b_count"][i]), int(records["b_target"][i]))
                ends = sentence_offsets.read(b_start[i] + 1, b_start[i] + window + 1) - b_begin[i]
                taken = min(int(np.searchsorted(ends, records["b_target"][i], side="left")), window - 1)
                b_end[i] = b_begin[i] + ends[taken]

        len_a, len_b = a_end - a_begin, b_end - b_begin
        trim_a, trim_b = truncation_counts(len_a, len_b, self.max_len - 3)
        # Randomness of truncation is a pure function of (seed, epoch, row).
        row_keys = splitmix64(np.uint64(mix_seed(self.seed, epoch)) ^ rows.astype(np.uint64))
        front_a = random_halves(trim_a, row_keys)
        front_b = random_halves(trim_b, splitmix64(row_keys))
        a_begin, a_end = a_begin + front_a, a_end - (trim_a - front_a)
        b_begin, b_end = b_begin + front_b, b_end - (trim_b - front_b)

        examples = []
        with self.cache.open_tokens() as tokens:
            for a0, a1, b0, b1, label in zip(
                a_begin.tolist(),
                a_end.tolist(),
                b_begin.tolist(),
                b_end.tolist(),
                records["is_random_next"].tolist(),
                strict=True,
            ):
                na, nb = a1 - a0, b1 - b0
                input_ids = np.empty(na + nb + 3, np.int32)
                input_ids[0] = self.cls_id
                input_ids[1 : na + 1] = tokens.read(a0, a1)
                input_ids[na + 1] = self.sep_id
                input_ids[na + 2 : -1] = tokens.read(b0, b1)
                input_ids[-1] = self.sep_id
                examples.append({"input_ids": input_ids, "num_a_tokens": na + 2, "is_random_next": label})
        return examples

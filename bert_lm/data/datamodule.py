"""LightningDataModule for BERT pretraining: token cache, epoch plans, sampling, resume.

prepare_data (one process per node) tokenizes train.txt and valid.txt into token caches
and plans epoch 0; setup (every rank) opens them. Nothing big is pickled to workers: the
dataset holds paths and opens its files per batch.

Batches are dicts of int64 tensors: input_ids, token_type_ids, attention_mask,
mlm_labels (B, T) and nsp_labels (B,) with NSP, plus example_index (B,), the example's
row in its epoch plan (pick the model's keys; do not pass the batch as **batch).

Per-worker seeding is not needed: examples come from the epoch plan and masks from a
generator seeded by (seed, epoch, position of the batch), so batches are the same with
any number of workers (tested) and after a resume.

Distributed sampling. `ShardedEpochSampler` subclasses DistributedSampler only so that
Lightning's `use_distributed_sampler` leaves it alone (Lightning replaces any other
sampler with its own DistributedSampler, whose order and resume behaviour we do not
control). Rank r reads positions r, r + W, r + 2W, ... of the epoch's order (W = world
size; the last len % W positions are dropped, a different few every epoch). The order is
a function of (seed, epoch) only, so it does not depend on workers or on Lightning's
sampler flag, and ranks read disjoint examples.

Mid-epoch resume. The train loader (`ResumableDataLoader`) counts the batches it has
handed to the training loop and reports (epoch, examples seen per rank) through
state_dict(); load_state_dict() makes the sampler start the next iteration after those
examples (or at the next epoch when the saved one was finished). Lightning 2.6 saves
that state under "loops.fit_loop.state_dict.combined_loader", but restores it only in
FitLoop.setup_data(), and only when the fit loop is already `restarting`. When
configure_optimizers reads trainer.estimated_stepping_batches (a warmup schedule),
Lightning calls fit_loop.setup_data() from strategy.setup(), before the checkpoint's
loop state is restored (trainer._run: strategy.setup -> restore_training_state), so
`restarting` is False and nothing is loaded; the later setup_data() in fit_loop.run()
returns early because the loader already exists, and the saved state is never applied
(Lightning issue #20550): the resumed run replays the epoch from its first batch.
The DataModule therefore also saves the loader state in its own state_dict() and
re-applies it in load_state_dict(), which Lightning calls while restoring modules,
before strategy.setup(); the sampler keeps the state as pending and applies it lazily
at its next __iter__, so it works whichever of the two paths runs, and applying the
same state twice is harmless.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytorch_lightning as pl
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler

from bert_lm.data.masking import MlmMasker, PretrainingCollator
from bert_lm.data.pretraining_examples import PretrainingDataset, mix_seed
from bert_lm.data.token_cache import TokenCache, build_token_cache

log = logging.getLogger(__name__)


class ShardedEpochSampler(DistributedSampler):
    """Yields (epoch, position) keys of this rank's share of an epoch; resumable.

    `prepare_epoch(epoch)` runs in the main process before the first key of an epoch is
    yielded (the dataset writes that epoch's plan there, so workers only read it).
    """

    def __init__(
        self,
        num_examples: int,
        num_replicas: int = 1,
        rank: int = 0,
        prepare_epoch=None,
        fixed_epoch: int | None = None,
    ):
        # No super().__init__(): it would need a dataset and an initialized process group.
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} outside [0, {num_replicas})")
        self.num_examples = num_examples
        self.num_replicas = num_replicas
        self.rank = rank
        self.prepare_epoch = prepare_epoch
        self.fixed_epoch = fixed_epoch
        self.epoch = 0 if fixed_epoch is None else fixed_epoch
        self.num_samples = num_examples // num_replicas  # DistributedSampler's name for len()
        if self.num_samples == 0:
            raise ValueError(f"{num_examples} examples cannot be shared by {num_replicas} ranks")
        self.total_size = self.num_samples * num_replicas
        self.shuffle = False  # the dataset shuffles by position; Lightning reads this flag
        self.drop_last = True
        self.seed = 0
        self._pending_resume: tuple[int, int] | None = None  # (epoch, positions consumed, all ranks)
        self._epoch_set_since_resume = False
        self.iteration_epoch = self.epoch
        self.iteration_start = 0  # this rank's index where the current iteration began

    def __len__(self) -> int:
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        if self.fixed_epoch is None:
            self.epoch = epoch
            self._epoch_set_since_resume = True

    def resume(self, epoch: int, positions_consumed: int) -> None:
        """Start the next iteration after the first `positions_consumed` positions of `epoch`."""
        self._pending_resume = (int(epoch), int(positions_consumed))
        self._epoch_set_since_resume = False

    @property
    def pending_resume(self) -> tuple[int, int] | None:
        return self._pending_resume

    def _start(self) -> tuple[int, int]:
        if self._pending_resume is None:
            return self.epoch, 0
        epoch, consumed = self._pending_resume
        self._pending_resume = None
        # Rank r reads positions i * W + r; those below `consumed` were read before.
        start = max(0, math.ceil((consumed - self.rank) / self.num_replicas))
        if start >= self.num_samples:
            epoch, start = epoch + 1, 0  # the saved epoch was finished
        if self.fixed_epoch is not None:
            return self.fixed_epoch, start
        if self._epoch_set_since_resume and self.epoch != epoch:
            # The trainer moved on, e.g. an epoch cut short by limit_train_batches was saved
            # at its end: follow the trainer's epoch from its start.
            log.warning(
                "restored loader state is in epoch %d but epoch %d starts: reading it from its start", epoch, self.epoch
            )
            return self.epoch, 0
        self.epoch = epoch
        return epoch, start

    def __iter__(self):
        epoch, start = self._start()
        self.iteration_epoch, self.iteration_start = epoch, start
        if self.prepare_epoch is not None:
            self.prepare_epoch(epoch)
        for index in range(start, self.num_samples):
            yield epoch, index * self.num_replicas + self.rank


class ResumableDataLoader(DataLoader):
    """DataLoader whose state_dict() says how far the training loop got in the epoch.

    It counts batches as they are handed out, not indices the sampler produced: workers
    prefetch indices ahead of training. Lightning does not prefetch batches from a loader
    with a length, so at checkpoint time the count is what training consumed.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not isinstance(self.sampler, ShardedEpochSampler):
            raise TypeError("ResumableDataLoader needs a ShardedEpochSampler")
        self._epoch = self.sampler.epoch
        self._seen = 0  # examples of self._epoch read by this rank

    def __iter__(self):
        # A generator: nothing (no worker, no sampler) starts until the first batch is asked
        # for, which is after Lightning's set_epoch() and after any resume state arrived.
        iterator = super().__iter__()
        started = False
        for batch in iterator:
            if not started:
                self._epoch, self._seen, started = self.sampler.iteration_epoch, self.sampler.iteration_start, True
            self._seen = min(self._seen + self.batch_size, self.sampler.num_samples)
            yield batch

    def state_dict(self) -> dict:
        pending = self.sampler.pending_resume
        if pending is not None:  # restored but not yet iterated: hand the restored state on
            epoch, consumed = pending
        else:
            epoch, consumed = self._epoch, self._seen * self.sampler.num_replicas
        return {"epoch": epoch, "positions_consumed": consumed, "examples_per_epoch": self.sampler.num_examples}

    def load_state_dict(self, state: dict) -> None:
        if state["examples_per_epoch"] != self.sampler.num_examples:
            raise ValueError(
                f"checkpoint's data has {state['examples_per_epoch']} examples per epoch, this run "
                f"{self.sampler.num_examples}: not the same corpus or data settings"
            )
        self.sampler.resume(state["epoch"], state["positions_consumed"])


def _rank_and_world_size(trainer) -> tuple[int, int]:
    if trainer is not None:
        return trainer.global_rank, trainer.world_size
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _holds_a_sentence(path: Path) -> bool:
    """Whether a prepared split has any sentence (reads only up to the first one)."""
    with open(path, encoding="utf-8") as lines:
        return any(line.strip() not in ("", "[EOD]") for line in lines)


class PretrainingDataModule(pl.LightningDataModule):
    """BERT pretraining data from a prepared corpus directory (train.txt, valid.txt)."""

    def __init__(
        self,
        prepared_dir: str,
        tokenizer_dir: str,
        cache_dir: str,
        max_len: int = 128,
        batch_size: int = 32,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        train_nsp: bool = True,
        short_seq_prob: float = 0.1,
        nsp_prob: float = 0.5,
        mask_ratio: float = 0.15,
        mask_token_prob: float = 0.8,
        random_token_prob: float = 0.1,
        whole_word_mask: bool = False,
        pack_documents: bool = False,
        pad_to_multiple_of: int | None = None,
        seed: int = 0,
    ):
        super().__init__()
        self.prepared_dir = Path(prepared_dir)
        self.tokenizer_dir = Path(tokenizer_dir)
        self.cache_dir = Path(cache_dir)
        self.max_len = max_len
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers and num_workers > 0
        self.train_nsp = train_nsp
        self.short_seq_prob = short_seq_prob
        self.nsp_prob = nsp_prob
        self.mask_ratio = mask_ratio
        self.mask_token_prob = mask_token_prob
        self.random_token_prob = random_token_prob
        self.whole_word_mask = whole_word_mask
        self.pack_documents = pack_documents
        self.pad_to_multiple_of = pad_to_multiple_of
        self.seed = seed
        # A sentence longer than any example could hold is cut in the cache; 512 keeps one
        # cache valid for the usual 128- and 512-token phases.
        self.max_sentence_tokens = max(512, max_len)
        self.train_dataset: PretrainingDataset | None = None
        self.valid_dataset: PretrainingDataset | None = None
        self._train_loader: ResumableDataLoader | None = None
        self._loader_state: dict | None = None  # restored from a checkpoint, not yet handed on

    def _load_tokenizer(self):
        from bert_lm.tokenizer.loading import load_tokenizer  # imported when used

        return load_tokenizer(self.tokenizer_dir)

    def _caches(self, tokenizer) -> dict[str, TokenCache]:
        valid_file = self.prepared_dir / "valid.txt"
        if valid_file.is_file() and not _holds_a_sentence(valid_file):
            raise ValueError(
                f"{valid_file} holds no document: pretraining needs a validation split (the checkpoints are "
                "chosen by val/mlm_loss); prepare the corpus with data.valid_ratio above 0"
            )
        # build_token_cache reuses a valid cache with the same key, so setup() only hashes
        # and verifies after prepare_data() built them. On a shared filesystem the first
        # node's prepare_data builds them and the others wait for it and reuse them.
        return {
            split: build_token_cache(
                self.prepared_dir / f"{split}.txt",
                tokenizer,
                self.cache_dir,
                max_sentence_tokens=self.max_sentence_tokens,
            )
            for split in ("train", "valid")
        }

    def _datasets(self, tokenizer, caches: dict[str, TokenCache]) -> tuple[PretrainingDataset, PretrainingDataset]:
        common = dict(
            max_len=self.max_len,
            train_nsp=self.train_nsp,
            pack_documents=self.pack_documents,
            short_seq_prob=self.short_seq_prob,
            nsp_prob=self.nsp_prob,
            cls_id=tokenizer.cls_id,
            sep_id=tokenizer.sep_id,
        )
        plan_root = self.cache_dir / "plans"
        train = PretrainingDataset(caches["train"], plan_root, seed=self.seed, **common)
        # Validation: one fixed plan, in order, with fixed masks, so val losses compare.
        valid = PretrainingDataset(
            caches["valid"], plan_root, seed=mix_seed(self.seed, 1), shuffle=False, fixed_epoch=0, **common
        )
        return train, valid

    def prepare_data(self) -> None:
        tokenizer = self._load_tokenizer()
        try:
            self._datasets(tokenizer, self._caches(tokenizer))  # also writes the epoch-0 plans
        finally:
            tokenizer.close()  # stop its Mecab pool before DataLoader workers fork

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is not None:
            return
        tokenizer = self._load_tokenizer()
        try:
            self.train_dataset, self.valid_dataset = self._datasets(tokenizer, self._caches(tokenizer))
        finally:
            tokenizer.close()
        masker = MlmMasker.for_tokenizer(
            tokenizer, self.mask_ratio, self.mask_token_prob, self.random_token_prob, self.whole_word_mask
        )
        self.train_collator = PretrainingCollator(masker, tokenizer.pad_id, self.seed, self.pad_to_multiple_of)
        self.valid_collator = PretrainingCollator(
            masker, tokenizer.pad_id, mix_seed(self.seed, 1), self.pad_to_multiple_of
        )

    def train_dataloader(self) -> ResumableDataLoader:
        rank, world_size = _rank_and_world_size(self.trainer)
        sampler = ShardedEpochSampler(
            len(self.train_dataset), world_size, rank, prepare_epoch=self.train_dataset.ensure_plan
        )
        self._train_loader = self._loader(self.train_dataset, sampler, self.train_collator, ResumableDataLoader)
        if self._loader_state is not None:
            self._train_loader.load_state_dict(self._loader_state)
            self._loader_state = None
        return self._train_loader

    def val_dataloader(self) -> DataLoader:
        rank, world_size = _rank_and_world_size(self.trainer)
        sampler = ShardedEpochSampler(len(self.valid_dataset), world_size, rank, fixed_epoch=0)
        return self._loader(self.valid_dataset, sampler, self.valid_collator, DataLoader)

    def _loader(self, dataset, sampler, collator, loader_class):
        return loader_class(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            collate_fn=collator,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
            drop_last=False,
        )

    def state_dict(self) -> dict:
        if self._train_loader is not None:
            return {"train_loader": self._train_loader.state_dict()}
        return {"train_loader": self._loader_state} if self._loader_state else {}

    def load_state_dict(self, state_dict: dict) -> None:
        # Called while Lightning restores the checkpoint, before strategy.setup() and so
        # before any train_dataloader() call of the resumed run: see the module docstring.
        state = state_dict.get("train_loader")
        if state is None:
            return
        if self._train_loader is not None:
            self._train_loader.load_state_dict(state)
        else:
            self._loader_state = state

    def example_stats(self) -> dict:
        """Statistics of the current epoch-0 plans (counts of negatives, long sentences...)."""
        return {"train": self.train_dataset.plan_stats(0), "valid": self.valid_dataset.plan_stats(0)}

"""Sharded sampling, loader state, and mid-epoch resume through Lightning (issue #20550)."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.utilities.combined_loader import CombinedLoader
from torch import nn

from bert_lm.data.datamodule import PretrainingDataModule, ResumableDataLoader, ShardedEpochSampler
from bert_lm.data.masking import MlmMasker, PretrainingCollator
from tests.conftest import SAMPLE_CORPUS
from tests.test_pretraining_examples import CLS, SEP, make_dataset, write_synthetic_cache


@pytest.fixture
def synthetic_dataset(tmp_path):
    rng = np.random.default_rng(0)
    cache = write_synthetic_cache(
        tmp_path / "cache", [rng.integers(1, 20, rng.integers(1, 8)).tolist() for _ in range(60)]
    )
    return make_dataset(cache, tmp_path / "plans")


def make_loader(dataset, batch_size=8, num_workers=0, num_replicas=1, rank=0) -> ResumableDataLoader:
    sampler = ShardedEpochSampler(len(dataset), num_replicas, rank, prepare_epoch=dataset.ensure_plan)
    collate = PretrainingCollator(MlmMasker(10_000, 4, [0, 1, CLS, SEP, 4, 5]), pad_id=0, seed=0)
    return ResumableDataLoader(
        dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate, num_workers=num_workers
    )


def epoch_batches(loader, epoch=None):
    if epoch is not None:
        loader.sampler.set_epoch(epoch)
    return [batch for batch in loader]


def test_ranks_read_disjoint_shares(synthetic_dataset):
    world = 3
    shares = [list(ShardedEpochSampler(len(synthetic_dataset), world, rank)) for rank in range(world)]
    positions = [p for share in shares for _, p in share]
    assert len(positions) == len(set(positions)) == len(synthetic_dataset) // world * world
    assert all(len(share) == len(synthetic_dataset) // world for share in shares)


def test_resume_mid_epoch_and_across_world_sizes():
    sampler = ShardedEpochSampler(100, num_replicas=2, rank=1)
    sampler.resume(epoch=3, positions_consumed=40)  # 20 examples per rank were read
    keys = list(sampler)
    assert keys[0] == (3, 41) and len(keys) == 30
    grown = [ShardedEpochSampler(100, num_replicas=4, rank=r) for r in range(4)]
    for s in grown:
        s.resume(epoch=3, positions_consumed=40)
    assert sorted(p for s in grown for _, p in s) == list(range(40, 100))
    finished = ShardedEpochSampler(100)
    finished.resume(epoch=3, positions_consumed=100)
    assert next(iter(finished)) == (4, 0)  # the saved epoch was complete: next one
    # The trainer's set_epoch after the restore agrees: resume; disagrees (an epoch cut
    # short by limit_train_batches, saved at its end): the trainer's epoch from its start.
    agreeing, disagreeing = ShardedEpochSampler(100), ShardedEpochSampler(100)
    for sampler, trainer_epoch in ((agreeing, 3), (disagreeing, 4)):
        sampler.resume(epoch=3, positions_consumed=40)
        sampler.set_epoch(trainer_epoch)
    assert next(iter(agreeing)) == (3, 40) and next(iter(disagreeing)) == (4, 0)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_loader_state_resumes_without_repeat_or_skip(synthetic_dataset, num_workers):
    reference = epoch_batches(make_loader(synthetic_dataset), epoch=1)
    loader = make_loader(synthetic_dataset, num_workers=num_workers)
    loader.sampler.set_epoch(1)
    consumed = list(itertools.islice(iter(loader), 3))
    state = loader.state_dict()
    assert state["epoch"] == 1 and state["positions_consumed"] == 24

    resumed = make_loader(synthetic_dataset, num_workers=num_workers)
    resumed.load_state_dict(state)
    assert resumed.state_dict() == state  # a checkpoint taken before iterating keeps the position
    rest = list(resumed)
    for got, want in zip(consumed + rest, reference, strict=True):
        for key in want:  # same examples, same masks, with or without workers
            assert torch.equal(got[key], want[key])
    assert resumed.state_dict()["positions_consumed"] == len(synthetic_dataset)


def test_masks_and_examples_change_between_epochs(synthetic_dataset):
    loader = make_loader(synthetic_dataset)
    first, second = epoch_batches(loader, 0), epoch_batches(loader, 1)
    assert len(first) == len(second)
    assert not torch.equal(first[0]["input_ids"], second[0]["input_ids"])
    assert torch.equal(first[0]["input_ids"], epoch_batches(loader, 0)[0]["input_ids"])


# ---------------------------------------------------------------------------------------
# The DataModule on the bundled sample corpus, with the real tokenizer


@pytest.fixture
def prepared_setup(tmp_path, plain_tokenizer):
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    shutil.copy(SAMPLE_CORPUS, prepared / "train.txt")
    lines = SAMPLE_CORPUS.read_text(encoding="utf-8").splitlines()
    (prepared / "valid.txt").write_text("\n".join(lines[:120]) + "\n", encoding="utf-8")
    plain_tokenizer.save(tmp_path / "tokenizer")
    return dict(
        prepared_dir=str(prepared), tokenizer_dir=str(tmp_path / "tokenizer"), cache_dir=str(tmp_path / "cache")
    )


def make_datamodule(paths, **overrides) -> PretrainingDataModule:
    options = dict(max_len=32, batch_size=16, num_workers=0, seed=3)
    return PretrainingDataModule(**paths, **{**options, **overrides})


def test_datamodule_batches(prepared_setup):
    datamodule = make_datamodule(prepared_setup, whole_word_mask=True, pad_to_multiple_of=8)
    datamodule.prepare_data()
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    assert set(batch) == {"input_ids", "token_type_ids", "attention_mask", "mlm_labels", "nsp_labels", "example_index"}
    assert batch["input_ids"].shape[1] <= 32 and batch["input_ids"].shape[1] % 8 == 0
    valid = list(datamodule.val_dataloader())
    assert torch.equal(valid[0]["input_ids"], next(iter(datamodule.val_dataloader()))["input_ids"])  # fixed
    stats = datamodule.example_stats()["train"]
    assert stats["num_examples"] == len(datamodule.train_dataset)

    spans = make_datamodule(prepared_setup, train_nsp=False)
    spans.setup("fit")
    assert "nsp_labels" not in next(iter(spans.train_dataloader()))

    # Packed: documents' ends no longer leave short spans, so fewer examples and no padding
    # but the last one's (a span is max_len - 2 items, less a separator dropped at an edge).
    packed = make_datamodule(prepared_setup, train_nsp=False, pack_documents=True, short_seq_prob=0.0)
    packed.setup("fit")
    assert len(packed.train_dataset) < len(spans.train_dataset)
    batch = next(iter(packed.train_dataloader()))
    lengths = batch["attention_mask"].sum(dim=1)
    assert batch["input_ids"].shape[1] == 32 and int((lengths < 30).sum()) <= 1


class Interrupted(Exception):
    pass


class TinyPretrainer(pl.LightningModule):
    """Any small model consuming the batch; records which examples each step saw."""

    def __init__(self, vocab_size: int, interrupt_at_step: int | None = None, warmup_from_estimate: bool = True):
        super().__init__()
        self.warmup_from_estimate = warmup_from_estimate
        self.embedding = nn.Embedding(vocab_size, 8)
        self.nsp_head = nn.Linear(8, 2)
        self.interrupt_at_step = interrupt_at_step
        self.seen: list[list[int]] = []
        self.learning_rates: list[float] = []

    def training_step(self, batch, batch_idx):
        if self.global_step == self.interrupt_at_step:
            raise Interrupted
        self.seen.append(batch["example_index"].tolist())
        self.learning_rates.append(self.trainer.optimizers[0].param_groups[0]["lr"])
        pooled = self.embedding(batch["input_ids"]).mean(1)
        return nn.functional.cross_entropy(self.nsp_head(pooled), batch["nsp_labels"])

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=0.1)
        # Reading estimated_stepping_batches here is what makes Lightning drop the loader
        # state on resume (#20550): it builds the train loader before the checkpoint loads.
        warmup = max(1, self.trainer.estimated_stepping_batches // 4) if self.warmup_from_estimate else 5
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def fit(
    paths,
    root: Path,
    num_workers: int,
    warmup_from_estimate: bool,
    interrupt_at_step=None,
    ckpt_path=None,
    callbacks=(),
):
    datamodule = make_datamodule(paths, num_workers=num_workers, persistent_workers=num_workers > 0)
    model = TinyPretrainer(3000, interrupt_at_step, warmup_from_estimate)
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=bool(callbacks),
        callbacks=list(callbacks),
        default_root_dir=root,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    except Interrupted:
        pass
    return model, trainer


@pytest.mark.parametrize(("num_workers", "warmup_from_estimate"), [(0, True), (2, True), (0, False)])
def test_mid_epoch_resume_with_warmup_scheduler(
    prepared_setup, tmp_path, monkeypatch, num_workers, warmup_from_estimate
):
    full, trainer = fit(prepared_setup, tmp_path / "full", num_workers, warmup_from_estimate)
    steps_per_epoch = trainer.num_training_batches
    assert len(full.seen) == 2 * steps_per_epoch

    # Crash in the second epoch; resume from the last checkpoint, taken mid-epoch.
    every = steps_per_epoch // 2 + 1
    checkpoints = ModelCheckpoint(
        dirpath=tmp_path / "ckpt", every_n_train_steps=every, save_top_k=-1, filename="{step}"
    )
    crash_step = 2 * every + 2
    assert steps_per_epoch < 2 * every < crash_step < 2 * steps_per_epoch  # checkpoint is mid-epoch 1
    interrupted, _ = fit(
        prepared_setup,
        tmp_path / "run",
        num_workers,
        warmup_from_estimate,
        interrupt_at_step=crash_step,
        callbacks=[checkpoints],
    )

    lightning_loads = []  # loader states Lightning itself restores
    original = CombinedLoader._load_state_dicts
    monkeypatch.setattr(
        CombinedLoader,
        "_load_state_dicts",
        lambda self, states: (lightning_loads.append(states), original(self, states)),
    )
    resumed, _ = fit(
        prepared_setup,
        tmp_path / "run",
        num_workers,
        warmup_from_estimate,
        ckpt_path=tmp_path / "ckpt" / f"step={2 * every}.ckpt",
    )
    assert interrupted.seen[: 2 * every] + resumed.seen == full.seen  # nothing repeated, nothing skipped
    assert interrupted.learning_rates[: 2 * every] + resumed.learning_rates == full.learning_rates
    # The finding behind the DataModule's own state: reading estimated_stepping_batches in
    # configure_optimizers makes Lightning 2.6 skip restoring the loader state (#20550).
    assert len(lightning_loads) == (0 if warmup_from_estimate else 1)

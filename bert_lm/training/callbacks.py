"""Callbacks for pretraining that Lightning does not ship as such."""

from __future__ import annotations

from pytorch_lightning.callbacks import ThroughputMonitor


def _batch_size(batch) -> int:
    return int(batch["input_ids"].size(0))


def _real_tokens(batch) -> int:
    # Tokens that are not padding: what "tokens/s" means for a padded batch.
    return int(batch["attention_mask"].sum())


def token_throughput_monitor(window_size: int = 20) -> ThroughputMonitor:
    """Lightning's ThroughputMonitor counting non-pad tokens: logs
    ``train/device/items_per_sec`` (tokens/s per device) and samples/s, averaged
    over the last ``window_size`` steps (nothing before the window is full)."""
    return ThroughputMonitor(batch_size_fn=_batch_size, length_fn=_real_tokens, window_size=window_size)

"""Training stage: the LightningModule, the pretraining run's steps, strategies, callbacks."""

"""Sentence and pair classification: readers, model, metrics, the job, export, downloads."""

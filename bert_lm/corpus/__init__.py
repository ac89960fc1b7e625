"""Corpus stage: read sources, clean, split sentences, prepare train/valid text."""

"""Tokenizer stage: the Mecab step and the Mecab-aware WordPiece tokenizer."""

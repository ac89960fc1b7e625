"""Models: BERT with HF parameter names, and HF import/export."""

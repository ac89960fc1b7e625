"""KLUE NER: reader, alignment, CRF head, metrics, data, model, the job, export, download."""

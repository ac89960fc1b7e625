"""What a KLUE NER run leaves in its directory: the file names, and the report keys
that ``finetune.compare`` reads back (which file was scored, with which tag set).

Kept apart from the job (:mod:`finetune.ner.run`) so that readers of a run directory
do not import Lightning and MLflow to learn a file name.
"""

from __future__ import annotations

REPORT_JSON, REPORT_TEXT = "ner_report.json", "ner_report.txt"
CONFUSION_PNG, PREDICTIONS_TSV = "entity_confusion.png", "eval_predictions.tsv"
TEST_REPORT_JSON, TEST_PREDICTIONS_TSV = "test_report.json", "test_predictions.tsv"
# Report keys naming the scored file (the predictions TSV holds predicted tags only, in
# KLUE's format; the gold tags are in this file) and the tag set it was read with.
EVAL_FILE_KEY, TEST_FILE_KEY, LABELS_KEY = "eval_file", "test_file", "labels"

"""How far a bag of character n-grams gets on hate speech: the floor an encoder must clear.

    python bench/lexical_baseline.py

A TF-IDF logistic regression (scikit-learn) on ../shared/data/korean-hate-speech, `hate`
column (none / offensive / hate). Its settings are chosen the way the finetuning settings
in bench/RESULTS.md were: on 10 % of khs-split-train held out (seed 42); the chosen one is
then refit on all of khs-split-train and scored once on khs-split-dev (802 rows), the file
the encoders are compared on. Seconds of CPU.

Why it is here: a randomly initialised encoder finetuned on 7,094 rows is, in effect, a
learned bag of pieces; if it already scores what n-grams score, a pretrained encoder only
shows a gain where it knows more than which strings occur. Prints the carve's grid, the
dev score, and `lexical_baseline_macro_f1: <x>` last.
"""

from __future__ import annotations

import csv
import sys
from itertools import product
from pathlib import Path

from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import train_test_split

HATE_SPEECH_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "korean-hate-speech"
TRAIN, DEV = HATE_SPEECH_DIR / "khs-split-train.tsv", HATE_SPEECH_DIR / "khs-split-dev.tsv"
LABEL = "hate"
# Character n-grams within word boundaries suit Korean: an eojeol's stem and its particles
# share characters, and the comments' slang is spelled many ways; word n-grams are the
# contrast. C and class weights: the usual small grid.
FEATURES = {
    "char_wb 1-3": {"analyzer": "char_wb", "ngram_range": (1, 3)},
    "char_wb 1-4": {"analyzer": "char_wb", "ngram_range": (1, 4)},
    "char 2-5": {"analyzer": "char", "ngram_range": (2, 5)},
    "word 1-2": {"analyzer": "word", "ngram_range": (1, 2)},
}
C_VALUES = (1.0, 4.0, 16.0)
CLASS_WEIGHTS = (None, "balanced")


def read_rows(path: Path) -> tuple[list[str], list[str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    missing = {"comments", LABEL} - set(rows[0] if rows else {})
    if missing:
        sys.exit(f"{path}: no column {sorted(missing)} in the header; expected the Korean HateSpeech TSV layout")
    return [row["comments"] for row in rows], [row[LABEL] for row in rows]


def fit(texts: list[str], labels: list[str], features: dict, c: float, class_weight: str | None):
    vectorizer = TfidfVectorizer(sublinear_tf=True, min_df=2, **features)
    model = LogisticRegression(C=c, max_iter=2000, class_weight=class_weight)
    model.fit(vectorizer.fit_transform(texts), labels)
    return lambda new_texts: model.predict(vectorizer.transform(new_texts))


def main() -> None:
    if not (TRAIN.is_file() and DEV.is_file()):
        sys.exit(f"skipped: {TRAIN} and {DEV} are needed (the shared Korean HateSpeech split)")
    train_texts, train_labels = read_rows(TRAIN)
    dev_texts, dev_labels = read_rows(DEV)
    fit_texts, carve_texts, fit_labels, carve_labels = train_test_split(
        train_texts, train_labels, test_size=0.1, random_state=42
    )
    print(f"{len(fit_texts)} rows to fit, {len(carve_texts)} held out to choose, {len(dev_texts)} dev rows")
    print("| features | C | class weight | carve macro F1 |\n|---|---:|---|---:|")
    scores = {}
    for (name, features), c, class_weight in product(FEATURES.items(), C_VALUES, CLASS_WEIGHTS):
        predict = fit(fit_texts, fit_labels, features, c, class_weight)
        scores[name, c, class_weight] = f1_score(carve_labels, predict(carve_texts), average="macro")
        print(f"| {name} | {c:g} | {class_weight} | {scores[name, c, class_weight]:.4f} |", flush=True)
    name, c, class_weight = max(scores, key=scores.get)
    predictions = fit(train_texts, train_labels, FEATURES[name], c, class_weight)(dev_texts)
    macro_f1 = f1_score(dev_labels, predictions, average="macro")
    print(f"chosen on the carve: {name}, C={c:g}, class_weight={class_weight}; refit on all of {TRAIN.name}")
    print(f"{DEV.name}: macro F1 {macro_f1:.4f}, accuracy {accuracy_score(dev_labels, predictions):.4f}")
    print(f"lexical_baseline_macro_f1: {macro_f1:.4f}")


if __name__ == "__main__":
    main()

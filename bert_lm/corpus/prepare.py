"""Prepare step: raw corpus -> cleaned, sentence-split, document-level train/valid split.

Output, in a directory keyed by a hash of the input files and every setting that
changes the result (so a changed corpus or setting never reuses a stale split):
  ``train.txt``, ``valid.txt``  one sentence per line, ``[EOD]`` after each document
  ``stats.json``                counts of documents, sentences, characters and of
                                what each cleaning step changed

The directory is written under a temporary name of its own (process id and a random
suffix) and renamed when complete, so an interrupted run never leaves a half-written
corpus that a later run would trust, and two processes building at once never write into
the same files. :func:`publish_directory` and :func:`build_lock` are that publish step and
the lock that lets processes sharing a cache directory (a parallel multirun, several nodes
of one job) build each result once: see ``bert_lm.training.corpus_pipeline``.

Usage on its own: ``python -m bert_lm.corpus.prepare data=petitions data.root=<dir>``
(any ``run.py`` data override works).
"""

from __future__ import annotations

import filecmp
import hashlib
import json
import logging
import os
import random
import shutil
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from filelock import FileLock, Timeout
from tqdm.auto import tqdm

from bert_lm.corpus.cleaning import CleaningConfig, DuplicateFilter, TextCleaner
from bert_lm.corpus.readers import EOD, list_corpus_files, read_documents
from bert_lm.corpus.sentence_split import split_sentences

TRAIN_FILE, VALID_FILE, STATS_FILE = "train.txt", "valid.txt", "stats.json"
# Bump when cleaning or splitting code changes what a prepared corpus holds.
_PREPARE_FORMAT_VERSION = 2

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PrepareSettings:
    source: str  # "plain", "lines" or "petitions"
    root: str
    file_pattern: str = "*"
    text_field: str = "text"  # jsonl
    text_column: str = "text"  # csv, tsv, parquet, datasets
    split_sentences: bool = False
    valid_ratio: float = 0.1
    split_seed: int = 42
    on_decode_error: str = "raise"
    min_sentence_chars: int = 2

    def __post_init__(self):
        if not 0.0 <= self.valid_ratio < 1.0:
            raise ValueError(f"data.valid_ratio={self.valid_ratio}: must be in [0, 1)")


def _file_digest(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode())
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def prepared_dir_for(settings: PrepareSettings, cleaning: CleaningConfig, cache_root: str | Path) -> Path:
    """Where the prepared corpus for these inputs and settings lives."""
    files = list_corpus_files(settings.root, settings.file_pattern)
    key = json.dumps(
        {
            "files": _file_digest(files),
            "settings": {k: v for k, v in asdict(settings).items() if k != "root"},
            "cleaning": asdict(cleaning),
            "version": _PREPARE_FORMAT_VERSION,
        },
        sort_keys=True,
    )
    return Path(cache_root) / f"{settings.source}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def is_prepared(out_dir: Path) -> bool:
    return all((out_dir / name).is_file() for name in (TRAIN_FILE, VALID_FILE, STATS_FILE))


# ---------------------------------------------------------------------------------------
# Publishing a directory that other processes may be building at the same time


def private_temporary(target: Path, kind: str = "tmp") -> Path:
    """A hidden name beside ``target`` that no other process uses: ``.tmp-<name>-<pid>-<random>``."""
    return target.with_name(f".{kind}-{target.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def lock_path_for(target: Path) -> Path:
    """``.<name>.lock`` beside ``target``: never inside it (a tokenizer directory is copied into
    exports and MLflow), hidden so that globs such as ``mecab-wordpiece-*`` skip it."""
    return target.with_name(f".{target.name}.lock")


@contextmanager
def build_lock(target: Path, what: str) -> Iterator[FileLock]:
    """Hold ``lock_path_for(target)`` while checking for, building and publishing ``target``.

    A second process waits here (saying so) and then finds the first one's result. The lock
    is ``fcntl.flock`` (filelock's ``FileLock``): the kernel releases it when its holder dies,
    so a crashed build never leaves a stale lock. After a build the empty lock file stays in
    place, as filelock wants (waiters must lock the same inode); it is safe to delete when no
    run is active. After a failed build it is removed.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(lock_path_for(target))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.warning("waiting for another process building %s %s (lock %s)", what, target, lock.lock_file)
        lock.acquire()
    try:
        yield lock
    except BaseException:
        # A failed build leaves nothing behind, its lock file included. Unlinking it while
        # held is safe: a waiter that then locks the unlinked file sees so and retries.
        Path(lock.lock_file).unlink(missing_ok=True)
        raise
    finally:
        lock.release()


def publish_directory(temporary: Path, target: Path, is_complete: Callable[[Path], bool]) -> bool:
    """Rename the finished ``temporary`` to ``target`` (atomic: readers see nothing or all of it).

    When ``target`` is already there, complete by ``is_complete``, another process published
    first: ours is discarded and False returned, so every process uses the one in place. A
    ``target`` that is not complete (a leftover) is moved aside and replaced.
    """
    for _ in range(5):
        try:
            os.rename(temporary, target)
            return True
        except OSError:
            if not target.exists():
                raise
        if is_complete(target):
            shutil.rmtree(temporary, ignore_errors=True)
            return False
        aside = private_temporary(target, "replaced")
        try:
            os.rename(target, aside)  # never delete under the real name: a reader could see half a directory
        except FileNotFoundError:
            continue  # someone else moved it: try again
        shutil.rmtree(aside, ignore_errors=True)
    raise OSError(f"could not publish {temporary} as {target}: it keeps being replaced by another process")


def _same_prepared_corpus(a: Path, b: Path) -> bool:
    names = (TRAIN_FILE, VALID_FILE, STATS_FILE)
    return is_prepared(a) and is_prepared(b) and all(filecmp.cmp(a / n, b / n, shallow=False) for n in names)


class _SplitWriter:
    """Streams documents to train/valid files, choosing the side per document.

    The choice is a seeded draw per document in corpus order: deterministic for a
    given corpus and seed. The last train document is held back so that, if no
    document drew "valid", it can go there: a valid split is never empty when
    ``valid_ratio > 0`` and there are at least two documents.
    """

    def __init__(self, out_dir: Path, valid_ratio: float, seed: int):
        self.files = {
            "train": open(out_dir / TRAIN_FILE, "w", encoding="utf-8"),
            "valid": open(out_dir / VALID_FILE, "w", encoding="utf-8"),
        }
        self.valid_ratio = valid_ratio
        self.rng = random.Random(seed)
        self.held_back: list[str] | None = None
        self.documents = Counter()
        self.sentences = Counter()

    def _write(self, split: str, sentences: list[str]) -> None:
        self.files[split].write("".join(s + "\n" for s in sentences) + EOD + "\n")
        self.documents[split] += 1
        self.sentences[split] += len(sentences)

    def add(self, sentences: list[str]) -> None:
        if self.rng.random() < self.valid_ratio:
            self._write("valid", sentences)
            return
        if self.held_back is not None:
            self._write("train", self.held_back)
        self.held_back = sentences

    def close(self) -> None:
        if self.held_back is not None:
            needs_valid = self.valid_ratio > 0 and self.documents["valid"] == 0 and self.documents["train"] > 0
            self._write("valid" if needs_valid else "train", self.held_back)
        for handle in self.files.values():
            handle.close()


def prepare_corpus(
    settings: PrepareSettings, cleaning: CleaningConfig, out_dir: str | Path, show_progress: bool = True
) -> dict:
    """Write the prepared corpus to ``out_dir`` (atomically) and return its stats."""
    out_dir = Path(out_dir)
    files = list_corpus_files(settings.root, settings.file_pattern)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = private_temporary(out_dir)
    tmp_dir.mkdir()

    reader_counts: Counter[str] = Counter()
    cleaner = TextCleaner(cleaning)
    duplicates = DuplicateFilter()
    writer = _SplitWriter(tmp_dir, settings.valid_ratio, settings.split_seed)
    characters = 0
    dropped = Counter()
    try:
        documents = read_documents(
            files,
            settings.source,
            settings.on_decode_error,
            reader_counts,
            text_field=settings.text_field,
            text_column=settings.text_column,
        )
        for document in tqdm(documents, desc="prepare", unit="doc", disable=not show_progress, mininterval=1.0):
            sentences = []
            for block in document.blocks:
                text = cleaner(block)
                pieces = split_sentences(text) if settings.split_sentences else [text]
                for sentence in pieces:
                    if len(sentence) < settings.min_sentence_chars:
                        dropped["short_sentences"] += 1
                        continue
                    sentences.append(sentence)
            if not sentences:
                dropped["empty_documents"] += 1
                continue
            if cleaning.drop_duplicate_documents and duplicates.is_duplicate(sentences):
                continue
            characters += sum(len(s) for s in sentences)
            writer.add(sentences)
    except BaseException:
        writer.close()
        shutil.rmtree(tmp_dir, ignore_errors=True)  # never leave a half corpus behind
        raise
    writer.close()

    total_documents = sum(writer.documents.values())
    problem = None
    if total_documents == 0:
        problem = (
            f"no usable text in {settings.root} (every document was empty after cleaning); "
            "check data.root and data.source."
        )
    elif settings.valid_ratio > 0 and not writer.documents["valid"]:
        problem = (
            f"corpus {settings.root} is too small to give the validation split a document: {total_documents} "
            f"documents, valid_ratio {settings.valid_ratio} (each document goes to one split whole); "
            "add documents or raise data.valid_ratio"
        )
    elif not writer.documents["train"]:
        problem = (
            f"corpus {settings.root} is too small to give the training split a document: {total_documents} "
            f"documents, valid_ratio {settings.valid_ratio}; add documents or lower data.valid_ratio"
        )
    if problem:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise ValueError(problem)
    stats = {
        "files": [str(p) for p in files],
        "documents": dict(writer.documents),
        "sentences": dict(writer.sentences),
        "characters": characters,
        "cleaning_changed": dict(cleaner.counts),
        "duplicate_documents_removed": duplicates.duplicates,
        "dropped": dict(dropped),
        "reader": dict(reader_counts),
    }
    (tmp_dir / STATS_FILE).write_text(json.dumps(stats, ensure_ascii=False, indent=2), encoding="utf-8")
    # The same inputs and settings give the same bytes: a corpus another process published
    # meanwhile is kept if identical, and anything else under out_dir is replaced.
    publish_directory(tmp_dir, out_dir, lambda existing: _same_prepared_corpus(existing, tmp_dir))
    return stats


def format_stats(stats: dict) -> str:
    docs, sents = stats["documents"], stats["sentences"]
    changed = ", ".join(f"{k} {v}" for k, v in sorted(stats["cleaning_changed"].items())) or "nothing"
    # What never reached the corpus (records without text, undecodable lines skipped, empty documents,
    # sentences too short): said here too, so that a user need not open stats.json to see it.
    left_out = Counter(stats.get("reader", {})) + Counter(stats.get("dropped", {}))
    left_out.pop("namuwiki_section_headers", None)  # dropped by design (headings are no sentences), not lost
    left_out_text = ", ".join(f"{k} {v}" for k, v in sorted(left_out.items())) or "nothing"
    # No valid split only when asked for none: evaluate's corpus, scored whole.
    split = f"{docs.get('train', 0)} train / {docs['valid']} valid" if docs.get("valid") else "one split, no valid"
    return (
        f"prepared: {sum(docs.values())} documents ({split}), "
        f"{sum(sents.values())} sentences, {stats['characters']:,} characters; "
        f"cleaning changed: {changed}; duplicate documents removed: {stats['duplicate_documents_removed']}; "
        f"left out: {left_out_text}"
    )


def load_stats(out_dir: str | Path) -> dict:
    return json.loads((Path(out_dir) / STATS_FILE).read_text(encoding="utf-8"))

"""Fetch the public sentence-classification sets: NSMC and Korean HateSpeech.

* NSMC (e9t/nsmc, CC0): ``ratings_train.txt`` (150,000 reviews) and
  ``ratings_test.txt`` (50,000), TSV ``id document label`` (0 negative, 1 positive).
* Korean HateSpeech (kocohub/korean-hate-speech, CC BY-SA 4.0): ``labeled/train.tsv``
  (7,896 comments) and ``labeled/dev.tsv`` (471), TSV
  ``comments contain_gender_bias bias hate``.

As in :mod:`finetune.ner.download`: each URL is pinned to a commit, so a cached file
always means the same data; a download goes to a temporary file in the cache
directory, is checked (header columns, at least one data row, every row with the
header's number of fields, then the git blob id of the file at the pinned commit:
an HTML error page or a truncated file fails here, not later in training) and only
then is renamed into place, atomically. A cache file either is complete or is absent.

Offline, the first request fails within ``timeout`` seconds with a message that
says how to use local files instead (``task.data_dir=<dir> task.train_file=...``).

    python -m finetune.classification.download nsmc --cache-dir ~/.cache/nsmc
    python -m finetune.classification.download hate_speech --cache-dir ~/.cache/korean-hate-speech
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import logging
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bert_lm.corpus.petitions_download import DownloadError

log = logging.getLogger(__name__)

_CHUNK_BYTES = 1 << 16


@dataclass(frozen=True)
class PublicDataset:
    title: str  # for messages
    base_url: str
    file_names: Mapping[str, str]  # split -> file name (the same in the repository and in the cache)
    columns: tuple[str, ...]  # the header row, in order
    blob_ids: Mapping[str, str]  # split -> git blob id (SHA-1) of the file at the pinned commit
    local_option: Mapping[str, str]  # split -> the task key that names a local copy of it


# e9t/nsmc at the head of its `master` branch (the last commit, 2016-06-28); the blob ids
# are those of its tree, so a file that passes the check is the published one, byte for byte.
NSMC_COMMIT = "cc0670e872d4ac27bfe36c87456783004b39ef6c"
NSMC = PublicDataset(
    title="NSMC",
    base_url=f"https://raw.githubusercontent.com/e9t/nsmc/{NSMC_COMMIT}/",
    file_names={"train": "ratings_train.txt", "test": "ratings_test.txt"},
    columns=("id", "document", "label"),
    blob_ids={
        "train": "ac0dba272895dc1d0b3dd5f11afbeaeb7abe7876",
        "test": "b6cfcd8cd1557bcd9bf06617b0e429ed73e9a367",
    },
    local_option={"train": "task.train_file", "test": "task.test_file"},
)

# kocohub/korean-hate-speech at the head of its `master` branch (2020-07-18).
KOREAN_HATE_SPEECH_COMMIT = "f8d05dce2b22007bb149e5139c0060c68ad8f94b"
KOREAN_HATE_SPEECH = PublicDataset(
    title="Korean HateSpeech",
    base_url=f"https://raw.githubusercontent.com/kocohub/korean-hate-speech/{KOREAN_HATE_SPEECH_COMMIT}/labeled/",
    file_names={"train": "train.tsv", "dev": "dev.tsv"},
    columns=("comments", "contain_gender_bias", "bias", "hate"),
    blob_ids={
        "train": "a7663ec2ee2837b5e38a6c49ca47caee84eea894",
        "dev": "a2b083b74c72a4dab444ddc6b3e83fa269306b24",
    },
    local_option={"train": "task.train_file", "dev": "task.eval_file"},
)

DATASETS = {"nsmc": NSMC, "hate_speech": KOREAN_HATE_SPEECH}


class ClassificationDownloadError(DownloadError):
    """The data could not be fetched or is not what was expected; the message says how to continue offline."""


def offline_hint(dataset: PublicDataset) -> str:
    names = " and ".join(dataset.file_names[s] for s in dataset.file_names)
    files = " ".join(f"{dataset.local_option[s]}={name}" for s, name in dataset.file_names.items())
    return (
        f"If this machine has no network, put {names} in a directory and pass "
        f"task.download=false task.data_dir=<dir> {files}."
    )


def git_blob_id(path: Path) -> str:
    """The id git gives the file's content: SHA-1 of ``blob <size>\\0`` and the bytes."""
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def check_tsv(path: Path, columns: Sequence[str]) -> int:
    """Number of data rows; raises ValueError naming the line when the file is not that TSV."""
    rows = 0
    with open(path, "rb") as handle:
        for line_number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as err:
                raise ValueError(f"{path}:{line_number}: not UTF-8 ({err.reason})") from None
            if line_number == 1:
                header = tuple(line.removeprefix("\ufeff").split("\t"))
                if header != tuple(columns):
                    raise ValueError(f"header {line[:80]!r}, expected the columns {' '.join(columns)}")
                continue
            if not line:
                continue
            fields = line.count("\t") + 1
            if fields != len(columns):
                raise ValueError(f"{path}:{line_number}: {fields} tab-separated fields, expected {len(columns)}")
            rows += 1
    if rows == 0:
        raise ValueError(f"{path}: no data rows (empty or header only)")
    return rows


def _fetch(url: str, destination: Path, timeout: float) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": "bert-lm-classification-download"})
    with urllib.request.urlopen(request, timeout=timeout) as response, open(destination, "wb") as out:
        while chunk := response.read(_CHUNK_BYTES):
            out.write(chunk)


def download_dataset(
    dataset: PublicDataset,
    cache_dir: str | os.PathLike,
    splits: Sequence[str],
    *,
    timeout: float = 10.0,
    force: bool = False,
    base_url: str | None = None,
    blob_ids: Mapping[str, str] | None = None,
) -> dict[str, Path]:
    """Download the requested splits into ``cache_dir`` (reused when already there and intact).

    ``base_url`` and ``blob_ids`` default to the pinned ones (``blob_ids={}`` skips that check).
    Raises :class:`ClassificationDownloadError` when a file cannot be fetched or is not the expected data.
    """
    base_url = dataset.base_url if base_url is None else base_url
    blob_ids = dataset.blob_ids if blob_ids is None else blob_ids
    unknown = [s for s in splits if s not in dataset.file_names]
    if unknown:
        raise ValueError(f"unknown {dataset.title} split {unknown[0]!r}; expected one of {sorted(dataset.file_names)}")
    cache_dir = Path(cache_dir).expanduser()
    cache_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split in splits:
        target = cache_dir / dataset.file_names[split]
        paths[split] = target
        expected_blob = blob_ids.get(split)
        if target.is_file() and not force:
            if expected_blob is not None and git_blob_id(target) != expected_blob:
                raise ClassificationDownloadError(
                    f"the cached {target} is not the {dataset.title} {split} file it was downloaded as (changed "
                    "on disk): delete it to download it again."
                )
            continue
        url = base_url + dataset.file_names[split]
        log.info("downloading %s %s from %s", dataset.title, split, url)
        # Same directory as the target, so the final rename is atomic (same filesystem).
        fd, tmp_name = tempfile.mkstemp(dir=cache_dir, prefix=f".{target.name}.", suffix=".part")
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            try:
                _fetch(url, tmp, timeout)
            except (urllib.error.URLError, http.client.HTTPException, OSError, TimeoutError) as err:
                reason = err if isinstance(err, urllib.error.HTTPError) else getattr(err, "reason", err)
                raise ClassificationDownloadError(
                    f"could not download {dataset.title} {split} from {url}: {reason}. {offline_hint(dataset)}"
                ) from err
            try:
                rows = check_tsv(tmp, dataset.columns)
            except ValueError as err:
                raise ClassificationDownloadError(
                    f"the file downloaded from {url} is not {dataset.title} TSV ({err}). {offline_hint(dataset)}"
                ) from None
            blob = git_blob_id(tmp)
            if expected_blob is not None and blob != expected_blob:
                raise ClassificationDownloadError(
                    f"{dataset.title} {split} from {url} has git blob id {blob}, expected {expected_blob} (the file "
                    f"at the pinned commit): incomplete or altered. {offline_hint(dataset)}"
                )
            os.replace(tmp, target)
            log.info("%s %s: %d rows -> %s", dataset.title, split, rows, target)
        finally:
            tmp.unlink(missing_ok=True)
    return paths


def download_nsmc(
    cache_dir: str | os.PathLike, splits: Sequence[str] = ("train", "test"), *, timeout: float = 10.0, **kwargs
) -> dict[str, Path]:
    """NSMC ``{split: path}`` for ``train`` / ``test``; see :func:`download_dataset`."""
    return download_dataset(NSMC, cache_dir, splits, timeout=timeout, **kwargs)


def download_korean_hate_speech(
    cache_dir: str | os.PathLike, splits: Sequence[str] = ("train", "dev"), *, timeout: float = 10.0, **kwargs
) -> dict[str, Path]:
    """Korean HateSpeech ``{split: path}`` for ``train`` / ``dev``; see :func:`download_dataset`."""
    return download_dataset(KOREAN_HATE_SPEECH, cache_dir, splits, timeout=timeout, **kwargs)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=sorted(DATASETS))
    parser.add_argument("--cache-dir", required=True, help="directory to store the TSV files in")
    parser.add_argument("--splits", nargs="+", help="default: all (nsmc: train test; hate_speech: train dev)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per network operation")
    parser.add_argument("--force", action="store_true", help="download again even if cached")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    dataset = DATASETS[args.dataset]
    try:
        paths = download_dataset(
            dataset, args.cache_dir, args.splits or list(dataset.file_names), timeout=args.timeout, force=args.force
        )
    except (ClassificationDownloadError, ValueError) as err:
        raise SystemExit(f"error: {err}") from None
    for split, path in paths.items():
        print(f"{split}: {path}")


if __name__ == "__main__":
    main()

"""Fetch the official KLUE NER v1.1 files (train 21,008 / dev 5,000 sentences).

KLUE publishes them in its GitHub repository (CC BY-SA 4.0). The URL is pinned to
a commit so that a cached file always means the same data. A download goes to a
temporary file in the cache directory, is parsed with the KLUE reader (an HTML
error page or a truncated file fails there, not later in training), and only then
is renamed into place, atomically: a cache file either is complete or is absent.

Offline, the first request fails within ``timeout`` seconds with a message that
says how to use local files instead (``task.data_dir=<local dir>``).

    python -m finetune.ner.download --cache-dir ~/.cache/klue-ner
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from bert_lm.corpus.petitions_download import DownloadError
from finetune.ner.klue_ner import KlueFormatError, read_klue_ner

log = logging.getLogger(__name__)

# KLUE-benchmark/KLUE at the commit of its current README (v1.1 data).
KLUE_COMMIT = "3efd98708a40ff49251fddde35453f8fbb11f536"
KLUE_NER_BASE_URL = f"https://raw.githubusercontent.com/KLUE-benchmark/KLUE/{KLUE_COMMIT}/klue_benchmark/klue-ner-v1.1/"
OFFICIAL_FILE_NAMES = {"train": "klue-ner-v1.1_train.tsv", "dev": "klue-ner-v1.1_dev.tsv"}
_CHUNK_BYTES = 1 << 16


class KlueDownloadError(DownloadError):
    """The data could not be fetched; the message says how to continue offline."""


def _offline_hint(file_names: Mapping[str, str]) -> str:
    names = " and ".join(sorted(file_names.values()))
    return f"If this machine has no network, put {names} in a directory and pass task.data_dir=<local dir>."


def find_local_files(
    data_dir: str | os.PathLike, file_names: Mapping[str, str] = OFFICIAL_FILE_NAMES
) -> dict[str, Path]:
    """``{split: path}`` for files already on disk; raises naming every missing one."""
    data_dir = Path(data_dir).expanduser()
    paths = {split: data_dir / name for split, name in file_names.items()}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"task.data_dir={data_dir} lacks {', '.join(missing)}; expected the KLUE NER TSV files "
            f"{sorted(file_names.values())} there (or leave task.data_dir unset to download them)."
        )
    return paths


def _fetch(url: str, destination: Path, timeout: float) -> str:
    """Stream ``url`` into ``destination``; returns the SHA-256 of what was written."""
    digest = hashlib.sha256()
    request = urllib.request.Request(url, headers={"User-Agent": "klue-ner-download"})
    with urllib.request.urlopen(request, timeout=timeout) as response, open(destination, "wb") as out:
        while chunk := response.read(_CHUNK_BYTES):
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


def download_klue_ner(
    cache_dir: str | os.PathLike,
    splits: Sequence[str] = ("train", "dev"),
    *,
    base_url: str = KLUE_NER_BASE_URL,
    file_names: Mapping[str, str] = OFFICIAL_FILE_NAMES,
    sha256: Mapping[str, str] | None = None,
    timeout: float = 10.0,
    force: bool = False,
) -> dict[str, Path]:
    """Download the requested splits into ``cache_dir`` (kept if already there).

    ``sha256`` optionally pins the expected digest per split. Raises
    :class:`KlueDownloadError` when a file cannot be fetched or is not valid KLUE NER.
    """
    cache_dir = Path(cache_dir).expanduser()
    cache_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split in splits:
        if split not in file_names:
            raise ValueError(f"unknown split {split!r}; expected one of {sorted(file_names)}")
        target = cache_dir / file_names[split]
        paths[split] = target
        if target.is_file() and not force:
            continue
        url = base_url + file_names[split]
        log.info("downloading KLUE NER %s from %s", split, url)
        # Same directory as the target, so the final rename is atomic (same filesystem).
        fd, tmp_name = tempfile.mkstemp(dir=cache_dir, prefix=f".{target.name}.", suffix=".part")
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            try:
                digest = _fetch(url, tmp, timeout)
            except (urllib.error.URLError, OSError, TimeoutError) as err:
                reason = getattr(err, "reason", err)
                raise KlueDownloadError(
                    f"could not download KLUE NER {split} from {url}: {reason}. {_offline_hint(file_names)}"
                ) from err
            expected = (sha256 or {}).get(split)
            if expected is not None and digest != expected.lower():
                raise KlueDownloadError(
                    f"KLUE NER {split} from {url} has SHA-256 {digest}, expected {expected}. "
                    f"{_offline_hint(file_names)}"
                )
            try:
                sentences = read_klue_ner(tmp)
            except KlueFormatError as err:
                raise KlueDownloadError(
                    f"the file downloaded from {url} is not KLUE NER TSV ({err}). {_offline_hint(file_names)}"
                ) from err
            if not sentences:
                raise KlueDownloadError(
                    f"the file downloaded from {url} holds no sentences. {_offline_hint(file_names)}"
                )
            os.replace(tmp, target)
            log.info("KLUE NER %s: %d sentences, sha256 %s -> %s", split, len(sentences), digest, target)
        finally:
            tmp.unlink(missing_ok=True)
    return paths


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache-dir", required=True, help="directory to store the TSV files in")
    parser.add_argument("--splits", nargs="+", default=["train", "dev"], choices=sorted(OFFICIAL_FILE_NAMES))
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per network operation")
    parser.add_argument("--force", action="store_true", help="download again even if cached")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        paths = download_klue_ner(args.cache_dir, args.splits, timeout=args.timeout, force=args.force)
    except KlueDownloadError as err:
        raise SystemExit(f"error: {err}") from None
    for split, path in paths.items():
        print(f"{split}: {path}")


if __name__ == "__main__":
    main()

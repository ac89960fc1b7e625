"""Download the public Korean petitions archive (monthly JSON-lines files).

The same files Korean corpus loaders fetch (lovit/petitions_archive). Each month
is downloaded into ``cache_dir`` as ``petitions_YYYY-MM``:
  * resume: bytes go to ``<name>.part`` and an interrupted download continues
    with an HTTP Range request;
  * integrity: the size must match the server's Content-Length, every line must be
    a JSON object with a ``content`` string, and a ``<name>.sha256`` written after
    the check lets later runs detect a file changed or truncated on disk;
  * offline: the first request fails within ``timeout`` seconds with a message that
    names the local-directory option instead.

Usage: ``python -m bert_lm.corpus.petitions_download <cache_dir> 2019-04 2019-05``
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import requests
from tqdm.auto import tqdm

BASE_URL = "https://raw.githubusercontent.com/lovit/petitions_archive/master"
DEFAULT_MONTHS = ("2017-08", "2019-04", "2019-05", "2019-06", "2019-07")
_BLOCK = 1 << 16


class DownloadError(RuntimeError):
    """A download that failed; the message says how to continue offline (the other datasets' download
    errors derive from it, so that every entry point reports it as one line)."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_petitions_file(path: Path) -> None:
    """Every line must be a JSON object with a string ``content``."""
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise DownloadError(f"{path}:{line_number}: not JSON ({err.msg}); delete the file and download again") from None
            if not isinstance(record.get("content"), str):
                raise DownloadError(f"{path}:{line_number}: no 'content'; delete the file and download again")


def _fetch(url: str, part: Path, timeout: float, session: requests.Session) -> None:
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        response = session.get(url, headers=headers, stream=True, timeout=timeout)
    except requests.RequestException as err:
        raise DownloadError(
            f"cannot reach {url} ({type(err).__name__}). Without a network, download the "
            "petitions files elsewhere and point data.root=<local dir> at them (data=petitions)."
        ) from None
    with response:
        if response.status_code == 416:  # range past the end: the part file is complete
            return
        if response.status_code not in (200, 206):
            raise DownloadError(f"{url}: HTTP {response.status_code}")
        if response.status_code == 200:
            offset = 0  # the server ignored Range: start over
        expected = response.headers.get("Content-Length")
        total = offset + int(expected) if expected else None
        with open(part, "ab" if offset else "wb") as handle, tqdm(
            total=total, initial=offset, unit="B", unit_scale=True, desc=part.stem
        ) as bar:
            for block in response.iter_content(_BLOCK):
                handle.write(block)
                bar.update(len(block))
    if total is not None and part.stat().st_size != total:
        raise DownloadError(f"{url}: got {part.stat().st_size} of {total} bytes; run again to resume")


def download_petitions(
    cache_dir: str | Path,
    months: tuple[str, ...] = DEFAULT_MONTHS,
    base_url: str = BASE_URL,
    timeout: float = 10.0,
) -> Path:
    """Download (or verify already downloaded) months into ``cache_dir``; return it."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    with requests.Session() as session:
        for month in months:
            name = f"petitions_{month}"
            target, checksum = cache_dir / name, cache_dir / f"{name}.sha256"
            if target.exists() and checksum.exists():
                if _sha256(target) != checksum.read_text().strip():
                    raise DownloadError(f"{target} does not match {checksum}: delete both and download again")
                continue
            part = cache_dir / f"{name}.part"
            _fetch(f"{base_url}/{name}", part, timeout, session)
            verify_petitions_file(part)
            part.replace(target)
            checksum.write_text(_sha256(target) + "\n")
    return cache_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cache_dir")
    parser.add_argument("months", nargs="*", default=list(DEFAULT_MONTHS), help="YYYY-MM")
    args = parser.parse_args(argv)
    try:
        print(download_petitions(args.cache_dir, tuple(args.months)))
    except DownloadError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

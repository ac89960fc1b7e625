"""Readers that turn corpus files into documents (lists of text blocks).

Three formats:
  * ``plain``: one sentence per line; documents are separated by a blank line or
    a line holding only ``[EOD]``. Each yielded block is one sentence.
  * ``lines``: one document per line (a comment file, one comment a line). Each
    yielded document is that line as its one block, to be cut into sentences later
    (``data.split_sentences=true``); blank lines (and ``[EOD]`` lines) are skipped.
  * ``petitions``: the Korean petitions archive, JSON lines with the text in
    ``content`` (plus ``title``, ``category``, ...). One petition is one document;
    each yielded block is one paragraph, to be cut into sentences later.

Files are read line by line in binary and decoded per line, so a bad byte is
reported with its file and line, and memory does not depend on file size.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

EOD = "[EOD]"


class CorpusFormatError(ValueError):
    """A corpus file that cannot be read as the configured format."""


@dataclass
class Document:
    blocks: list[str]  # sentences (plain), paragraphs (petitions) or the whole line (lines)
    source: str  # "path:first_line", for messages


def list_corpus_files(root: str | Path, pattern: str = "*") -> list[Path]:
    """A file, or the files matching ``pattern`` under a directory, sorted."""
    path = Path(root).expanduser()
    if path.is_file():
        return [path]
    if not path.exists():
        raise FileNotFoundError(
            f"corpus path {path} does not exist: set data.root to a file or directory "
            "that holds the corpus (or use data=sample for the bundled sample)."
        )
    files = sorted(p for p in path.glob(pattern) if p.is_file() and not p.name.startswith("."))
    if not files:
        raise FileNotFoundError(
            f"no corpus files matching {pattern!r} in {path}: check data.root and data.file_pattern."
        )
    return files


def _decoded_lines(path: Path, on_decode_error: str, counts: Counter) -> Iterator[tuple[int, str]]:
    if on_decode_error not in ("raise", "skip"):
        raise ValueError(f"data.on_decode_error={on_decode_error!r}: use 'raise' or 'skip'")
    with open(path, "rb") as handle:
        for line_number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                if on_decode_error == "skip":
                    counts["skipped_undecodable_lines"] += 1
                    continue
                raise CorpusFormatError(
                    f"{path}:{line_number}: not valid UTF-8 (byte 0x{raw[err.start]:02x} at column "
                    f"{err.start + 1}). Convert the file to UTF-8 (e.g. `iconv -f cp949 -t utf-8`), "
                    "or set data.on_decode_error=skip to skip such lines and count them."
                ) from None
            if line_number == 1:
                line = line.removeprefix("\ufeff")  # a UTF-8 BOM is not text
            yield line_number, line.rstrip("\r\n")


def read_plain_text(path: Path, on_decode_error: str = "raise", counts: Counter | None = None) -> Iterator[Document]:
    counts = Counter() if counts is None else counts
    sentences: list[str] = []
    first_line = 1
    any_text = False
    for line_number, line in _decoded_lines(path, on_decode_error, counts):
        stripped = line.strip()
        if not stripped or stripped == EOD:
            if sentences:
                yield Document(sentences, f"{path}:{first_line}")
            sentences = []
            continue
        if not sentences:
            first_line = line_number
        sentences.append(stripped)
        any_text = True
    if sentences:
        yield Document(sentences, f"{path}:{first_line}")
    if not any_text:
        raise CorpusFormatError(f"{path}: the file holds no text; remove it or point data.root elsewhere.")


def read_lines(path: Path, on_decode_error: str = "raise", counts: Counter | None = None) -> Iterator[Document]:
    counts = Counter() if counts is None else counts
    any_text = False
    for line_number, line in _decoded_lines(path, on_decode_error, counts):
        stripped = line.strip()
        # A line of only [EOD] is no comment: in the prepared corpus it would read as a document end.
        if not stripped or stripped == EOD:
            continue
        any_text = True
        yield Document([stripped], f"{path}:{line_number}")
    if not any_text:
        raise CorpusFormatError(f"{path}: the file holds no text; remove it or point data.root elsewhere.")


def read_petitions(path: Path, on_decode_error: str = "raise", counts: Counter | None = None) -> Iterator[Document]:
    counts = Counter() if counts is None else counts
    any_line = False
    for line_number, line in _decoded_lines(path, on_decode_error, counts):
        if not line.strip():
            continue
        any_line = True
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise CorpusFormatError(
                f"{path}:{line_number}: not a JSON object ({err.msg}); the petitions format is one JSON object per line."
            ) from None
        if not isinstance(record, dict) or not isinstance(record.get("content"), str):
            raise CorpusFormatError(
                f"{path}:{line_number}: no string field 'content'; each petition line needs its text in 'content'. "
                "Is this the right file for data.source=petitions?"
            )
        paragraphs = [p for p in record["content"].splitlines() if p.strip()]
        if paragraphs:
            yield Document(paragraphs, f"{path}:{line_number}")
        else:
            counts["empty_documents"] += 1
    if not any_line:
        raise CorpusFormatError(f"{path}: the file holds no petitions; remove it or point data.root elsewhere.")


READERS = {"plain": read_plain_text, "lines": read_lines, "petitions": read_petitions}


def read_documents(
    files: list[Path], source: str, on_decode_error: str = "raise", counts: Counter | None = None
) -> Iterator[Document]:
    if source not in READERS:
        raise ValueError(f"data.source={source!r}: use one of {sorted(READERS)}")
    for path in files:
        yield from READERS[source](path, on_decode_error, counts)

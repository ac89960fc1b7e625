"""Readers that turn corpus files into documents (lists of text blocks).

Text formats:
  * ``plain``: one sentence per line; documents are separated by a blank line or
    a line holding only ``[EOD]``. Each yielded block is one sentence.
  * ``lines``: one document per line (a comment file, one comment a line). Each
    yielded document is that line as its one block, to be cut into sentences later
    (``data.split_sentences=true``); blank lines (and ``[EOD]`` lines) are skipped.
  * ``petitions``: the Korean petitions archive, JSON lines with the text in
    ``content`` (plus ``title``, ``category``, ...). One petition is one document;
    each yielded block is one paragraph, to be cut into sentences later.
  * ``namuwiki``: Korpora's namuwikitext files (``namuwikitext_20200302.train`` ...).
    A title line `` = 제목 = `` starts a document; section headers `` = = 소제목 = = ``
    (more ``=``) and the title itself are dropped, as BERT dropped Wikipedia headers:
    a heading is no sentence, and "개요" in every document would be a repeated
    one-word "sentence". Each other non-blank line is one block: the dump writes a
    paragraph or list item per line, so joining the lines between blank lines would
    glue list items ("김포 버스 388", "일본 국도 388") into one unsplittable sentence.

The record formats (``jsonl``, ``csv``, ``tsv``, ``parquet``, ``datasets``) live in
:mod:`bert_lm.corpus.formats`: one record (line, row) is one document.

Files are read line by line in binary and decoded per line, so a bad byte is
reported with its file and line, and memory does not depend on file size.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

EOD = "[EOD]"


class CorpusFormatError(ValueError):
    """A corpus file that cannot be read as the configured format."""


@dataclass
class Document:
    blocks: list[str]  # sentences (plain), paragraphs (petitions, records), lines (namuwiki) or the whole line (lines)
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


def decoded_lines(
    path: Path, on_decode_error: str, counts: Counter, keep_line_ends: bool = False
) -> Iterator[tuple[int, str]]:
    """(line number, line) pairs of a UTF-8 file; a bad byte raises with file and line, or is skipped
    and counted (``on_decode_error=skip``). ``keep_line_ends`` keeps "\\n" for the csv module."""
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
            yield line_number, line if keep_line_ends else line.rstrip("\r\n")


def read_plain_text(path: Path, on_decode_error: str = "raise", counts: Counter | None = None) -> Iterator[Document]:
    counts = Counter() if counts is None else counts
    sentences: list[str] = []
    first_line = 1
    any_text = False
    for line_number, line in decoded_lines(path, on_decode_error, counts):
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
    for line_number, line in decoded_lines(path, on_decode_error, counts):
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
    for line_number, line in decoded_lines(path, on_decode_error, counts):
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


# A title line " = 제목 = " (one "=" a side) or a section header " = = 소제목 = = " (more).
_NAMUWIKI_HEADING_RE = re.compile(r"^\s*(=(?: =)*) (.*?) \1\s*$")


def read_namuwiki(path: Path, on_decode_error: str = "raise", counts: Counter | None = None) -> Iterator[Document]:
    counts = Counter() if counts is None else counts
    blocks: list[str] = []
    title_line = 0  # 0 until the first title
    for line_number, line in decoded_lines(path, on_decode_error, counts):
        stripped = line.strip()
        if not stripped or stripped == EOD:
            continue
        heading = _NAMUWIKI_HEADING_RE.match(line)
        if heading and heading.group(1) == "=":
            if title_line:
                yield from _namuwiki_document(path, title_line, blocks, counts)
            title_line, blocks = line_number, []
            continue
        if not title_line:
            raise CorpusFormatError(
                f"{path}:{line_number}: text before the first title line (' = 제목 = '). data.source=namuwiki "
                "reads Korpora's namuwikitext files, where each document starts with its title; use "
                "data.source=plain or lines for other text."
            )
        if heading:
            counts["namuwiki_section_headers"] += 1
            continue
        blocks.append(stripped)
    if not title_line:
        raise CorpusFormatError(f"{path}: the file holds no text; remove it or point data.root elsewhere.")
    yield from _namuwiki_document(path, title_line, blocks, counts)


def _namuwiki_document(path: Path, title_line: int, blocks: list[str], counts: Counter) -> Iterator[Document]:
    if blocks:
        yield Document(blocks, f"{path}:{title_line}")
    else:
        counts["empty_documents"] += 1  # a title with no text under it


READERS = {"plain": read_plain_text, "lines": read_lines, "petitions": read_petitions, "namuwiki": read_namuwiki}


# Names that say a file is not text to read line by line: read by a text source, JSON lines would be
# pretrained on as JSON syntax (no error at all), and Parquet is binary.
_RECORD_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
_TEXT_SOURCES = ("plain", "lines", "namuwiki")
# The names a record format's files go by (a tab-separated file named .csv is read as tsv, fine).
_OWN_SUFFIXES = {"jsonl": (".jsonl", ".json", ".ndjson"), "csv": (".csv",), "tsv": (".tsv",), "parquet": (".parquet",)}


def check_file_names(files: list[Path], source: str) -> None:
    """Refuse, before reading, what would be read wrongly or fail on its first line without saying why:
    a JSON-lines or Parquet file read by a text source (``plain``, ``lines``, ``namuwiki``), and, in a
    directory of ``*.jsonl`` (``*.csv``, ...) corpus files, a file not named so (a README, Spark's
    ``_SUCCESS``)."""
    if source in _TEXT_SOURCES:
        for path in files:
            named = _RECORD_SUFFIXES.get(path.suffix.lower())
            if named:
                option = " (and data.text_field if the text is not in 'text')" if named == "jsonl" else ""
                raise CorpusFormatError(
                    f"{path}: the file's name says {named}, but data.source={source} reads lines of text: set "
                    f"data.source={named}{option}; if the file really is text, give it another name"
                )
        return
    own = _OWN_SUFFIXES.get(source)
    corpus_files = [path for path in files if own and path.suffix.lower() in own]
    strays = [path for path in files if own and path.suffix.lower() not in own]
    if corpus_files and strays:
        # Spelled as the files are (globs are case-sensitive), and covering every suffix they have.
        suffixes = sorted({path.suffix for path in corpus_files})
        common = os.path.commonprefix(suffixes)
        if len(suffixes) == 1 or len(common) > 1:
            selection = f"data.file_pattern='*{common}{'*' if len(suffixes) > 1 else ''}'"
        else:
            selection = f"data.file_pattern (the corpus files here end in {', '.join(suffixes)})"
        raise CorpusFormatError(
            f"{strays[0]}: not a {source} file like the corpus files beside it ({len(strays)} such file(s)); "
            f"select the corpus files with {selection}"
        )


def read_documents(
    files: list[Path],
    source: str,
    on_decode_error: str = "raise",
    counts: Counter | None = None,
    *,
    text_field: str = "text",
    text_column: str = "text",
) -> Iterator[Document]:
    """The documents of ``files`` (as :func:`list_corpus_files` lists them) in order.

    ``text_field`` names the JSON field of ``jsonl`` records; ``text_column`` the column of
    ``csv``/``tsv``/``parquet``/``datasets`` rows; other sources take neither.
    """
    # formats.py builds on this module (Document, decoded_lines), so it is imported here, not at the top.
    from bert_lm.corpus import formats

    if source not in READERS and source not in formats.READERS:
        raise ValueError(f"data.source={source!r}: use one of {sorted([*READERS, *formats.READERS])}")
    check_file_names(files, source)
    if source in READERS:
        for path in files:
            yield from READERS[source](path, on_decode_error, counts)
    else:
        yield from formats.read_records(files, source, on_decode_error, counts, text_field, text_column)

"""Readers for record formats: one record (JSON line, table row) is one document.

The formats people already hold their corpora in, as HF's ``run_mlm`` reads them
(txt, csv, json) plus the columnar ones:
  * ``jsonl``: one JSON object per line, the text in ``data.text_field``;
  * ``csv`` / ``tsv``: a header row, the text in ``data.text_column`` (TSV has no
    quoting: a field holds no tab and no line break);
  * ``parquet``: the text in ``data.text_column``, read a batch of rows at a time;
  * ``datasets``: a directory written by ``datasets.Dataset.save_to_disk``
    (``state.json`` lists its ``data-0000i-of-0000N.arrow`` files, each an Arrow
    IPC stream), read a record batch at a time with pyarrow alone.

Each document's text is cut into its lines (paragraphs), to be cut into sentences
later (``data.split_sentences=true``). Nothing reads a whole file into memory.
Bad input raises :class:`CorpusFormatError` with the file and the line (text
formats) or row (columnar formats, 1-based); empty texts are skipped and counted
(``empty_documents``), and so are null ones (``null_texts``).
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bert_lm.corpus.readers import EOD, CorpusFormatError, Document, decoded_lines

# Rows per batch read from a Parquet file. A saved dataset is read in the batches it was
# written in (datasets writes 1,000 rows per batch).
PARQUET_BATCH_ROWS = 1_000
# The csv module refuses fields over 128 KiB by default; a long article is a legitimate field.
_CSV_FIELD_LIMIT = 1 << 30


def _blocks(text: str) -> list[str]:
    # A line of only [EOD] would read as a document end in the prepared corpus.
    return [line for line in (raw.strip() for raw in text.splitlines()) if line and line != EOD]


def _preview(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _document(text: Any, where: str, name: str, setting: str, counts: Counter) -> Document | None:
    """The document of one record's text, or None (counted) when it is null or empty."""
    if text is None:
        counts["null_texts"] += 1
        return None
    if not isinstance(text, str):
        raise CorpusFormatError(
            f"{where}: {name} holds a {type(text).__name__} ({_preview(text)}), not a string; "
            f"set {setting} to the one that holds the text."
        )
    blocks = _blocks(text)
    if not blocks:
        counts["empty_documents"] += 1
        return None
    return Document(blocks, where)


def read_jsonl(
    path: Path, on_decode_error: str = "raise", counts: Counter | None = None, text_field: str = "text"
) -> Iterator[Document]:
    counts = Counter() if counts is None else counts
    any_record = False
    for line_number, line in decoded_lines(path, on_decode_error, counts):
        if not line.strip():
            continue
        any_record = True
        where = f"{path}:{line_number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise CorpusFormatError(
                f"{where}: not a JSON object ({err.msg} at column {err.colno}); data.source=jsonl reads one "
                "JSON object per line (a file holding one JSON array is not JSON lines)."
            ) from None
        if not isinstance(record, dict):
            raise CorpusFormatError(
                f"{where}: a JSON {type(record).__name__}, not an object; data.source=jsonl reads one "
                "JSON object per line."
            )
        if text_field not in record:
            raise CorpusFormatError(
                f"{where}: no field {text_field!r}; this record has {sorted(record)}. "
                "Set data.text_field to the field that holds the text."
            )
        document = _document(record[text_field], where, f"field {text_field!r}", "data.text_field", counts)
        if document is not None:
            yield document
    if not any_record:
        raise CorpusFormatError(f"{path}: the file holds no records; remove it or point data.root elsewhere.")


def _read_delimited(
    path: Path, on_decode_error: str, counts: Counter | None, text_column: str, tsv: bool
) -> Iterator[Document]:
    counts = Counter() if counts is None else counts
    last_line = 0  # the physical line the csv module last took

    def lines() -> Iterator[str]:
        nonlocal last_line
        # Line ends stay: a quoted CSV field may hold a line break.
        for line_number, line in decoded_lines(path, on_decode_error, counts, keep_line_ends=True):
            last_line = line_number
            yield line

    dialect = {"delimiter": "\t", "quoting": csv.QUOTE_NONE} if tsv else {"delimiter": ","}
    rows = csv.reader(lines(), strict=True, **dialect)
    kind, setting = ("TSV", "data.source=tsv") if tsv else ("CSV", "data.source=csv")
    header: list[str] | None = None
    text_index = rows_read = 0
    field_limit = csv.field_size_limit(max(csv.field_size_limit(), _CSV_FIELD_LIMIT))
    try:
        while True:
            first_line = last_line + 1
            try:
                row = next(rows)
            except StopIteration:
                break
            except csv.Error as err:
                raise CorpusFormatError(f"{path}:{first_line}: not valid {kind} ({err}).") from None
            if len(row) <= 1 and not "".join(row).strip():
                continue  # a blank line
            if header is None:
                header, header_line = row, first_line
                if text_column not in header:
                    raise CorpusFormatError(
                        f"{path}:{first_line}: no column {text_column!r} in the header row; the columns are "
                        f"{header}. Set data.text_column to the one that holds the text ({setting} reads a "
                        "header row first)."
                    )
                text_index = header.index(text_column)
                continue
            if len(row) != len(header):
                hint = (
                    "TSV is read without quoting, so a text must hold no tab"
                    if tsv
                    else "a text holding a comma, quote or line break must be in double quotes"
                )
                raise CorpusFormatError(
                    f"{path}:{first_line}: {len(row)} fields, but the header (line {header_line}) has "
                    f"{len(header)}; {hint}."
                )
            rows_read += 1
            document = _document(
                row[text_index], f"{path}:{first_line}", f"column {text_column!r}", "data.text_column", counts
            )
            if document is not None:
                yield document
    finally:
        csv.field_size_limit(field_limit)
    if not rows_read:
        what = "no rows" if header is None else "a header row but no data rows"
        raise CorpusFormatError(f"{path}: the file holds {what}; remove it or point data.root elsewhere.")


def read_csv(
    path: Path, on_decode_error: str = "raise", counts: Counter | None = None, text_column: str = "text"
) -> Iterator[Document]:
    return _read_delimited(path, on_decode_error, counts, text_column, tsv=False)


def read_tsv(
    path: Path, on_decode_error: str = "raise", counts: Counter | None = None, text_column: str = "text"
) -> Iterator[Document]:
    return _read_delimited(path, on_decode_error, counts, text_column, tsv=True)


def _check_on_decode_error(on_decode_error: str) -> None:
    if on_decode_error not in ("raise", "skip"):
        raise ValueError(f"data.on_decode_error={on_decode_error!r}: use 'raise' or 'skip'")


def _text_column_is_binary(where: Path, schema, text_column: str) -> bool:
    """Check that the schema has a text column: string (False) or UTF-8 bytes (True)."""
    import pyarrow as pa

    def kind(arrow_type) -> str | None:
        if pa.types.is_dictionary(arrow_type):  # pandas categories
            arrow_type = arrow_type.value_type
        if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
            return "string"
        if pa.types.is_string_view(arrow_type):
            return "string"
        if pa.types.is_binary(arrow_type) or pa.types.is_large_binary(arrow_type):
            return "binary"
        return None

    if text_column not in schema.names:
        raise CorpusFormatError(
            f"{where}: no column {text_column!r}; the columns are {schema.names}. "
            "Set data.text_column to the one that holds the text."
        )
    arrow_type = schema.field(text_column).type
    if kind(arrow_type) is None:
        text_columns = [field.name for field in schema if kind(field.type)]
        raise CorpusFormatError(
            f"{where}: column {text_column!r} holds {arrow_type}, not text; set data.text_column to a string "
            f"column ({'this file has none' if not text_columns else ', '.join(text_columns)})."
        )
    return kind(arrow_type) == "binary"


def _column_documents(
    values: list,
    first_row: int,
    where: Callable[[int], str],
    name: str,
    binary: bool,
    on_decode_error: str,
    counts: Counter,
) -> Iterator[Document]:
    for row, value in enumerate(values, start=first_row):
        if binary and value is not None:
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError as err:
                if on_decode_error == "skip":
                    counts["skipped_undecodable_rows"] += 1
                    continue
                raise CorpusFormatError(
                    f"{where(row)}: {name} is not valid UTF-8 (byte 0x{value[err.start]:02x} at offset "
                    f"{err.start}); set data.on_decode_error=skip to skip such rows and count them."
                ) from None
        document = _document(value, where(row), name, "data.text_column", counts)
        if document is not None:
            yield document


def read_parquet(
    path: Path,
    on_decode_error: str = "raise",
    counts: Counter | None = None,
    text_column: str = "text",
    batch_rows: int = PARQUET_BATCH_ROWS,
) -> Iterator[Document]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    _check_on_decode_error(on_decode_error)
    counts = Counter() if counts is None else counts
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as err:
        raise CorpusFormatError(f"{path}: not a Parquet file ({err}); is data.source right?") from None
    binary = _text_column_is_binary(path, parquet.schema_arrow, text_column)
    rows = 0
    batches = parquet.iter_batches(batch_size=batch_rows, columns=[text_column])
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            break
        except (pa.ArrowException, OSError) as err:
            raise CorpusFormatError(f"{path}: unreadable after row {rows} ({err}).") from None
        yield from _column_documents(
            batch.column(0).to_pylist(),
            rows + 1,
            lambda row: f"{path}:row {row}",
            f"column {text_column!r}",
            binary,
            on_decode_error,
            counts,
        )
        rows += batch.num_rows
    if rows == 0:
        raise CorpusFormatError(f"{path}: the file holds no rows; remove it or point data.root elsewhere.")


def _not_a_saved_dataset(directory: Path) -> str:
    dict_file = directory / "dataset_dict.json"
    if dict_file.is_file():
        try:
            splits = list(json.loads(dict_file.read_text(encoding="utf-8"))["splits"])
        except (ValueError, KeyError, TypeError):
            splits = ["train"]
        return (
            f"{directory} holds a DatasetDict (splits {splits}), not one Dataset: set data.root to one "
            f"split's directory (e.g. {directory / splits[0]}), or data.file_pattern='*/*' to read every split."
        )
    return (
        f"{directory}: no state.json; data.source=datasets reads a directory written by "
        "datasets.Dataset.save_to_disk (data-*.arrow, dataset_info.json, state.json)."
    )


def read_saved_dataset(
    directory: Path, on_decode_error: str = "raise", counts: Counter | None = None, text_column: str = "text"
) -> Iterator[Document]:
    """A ``Dataset.save_to_disk`` directory: its data files in ``state.json`` order, a batch at a time."""
    import pyarrow as pa

    _check_on_decode_error(on_decode_error)
    counts = Counter() if counts is None else counts
    state_file = directory / "state.json"
    if not state_file.is_file():
        raise CorpusFormatError(_not_a_saved_dataset(directory))
    try:
        state = json.loads(state_file.read_text(encoding="utf-8"))
        data_files = [directory / entry["filename"] for entry in state["_data_files"]]
    except (ValueError, KeyError, TypeError) as err:
        raise CorpusFormatError(f"{state_file}: not a datasets state.json ({type(err).__name__}: {err}).") from None
    if state.get("_indices_data_files"):
        # Written by datasets 1.x after select/shuffle: the rows are an index into the data files.
        raise CorpusFormatError(
            f"{state_file}: the dataset was saved with an indices mapping, so its rows are not the rows of "
            "its files; save it again with ds.flatten_indices().save_to_disk(...)."
        )
    dataset_rows = 0
    for data_file in data_files:
        if not data_file.is_file():
            raise CorpusFormatError(f"{state_file}: lists {data_file.name}, which is missing from {directory}.")
        with pa.OSFile(str(data_file), "rb") as source:
            try:
                stream = pa.ipc.open_stream(source)
            except (pa.ArrowException, OSError) as err:
                raise CorpusFormatError(
                    f"{data_file}: not an Arrow IPC stream ({err}); Dataset.save_to_disk writes each data file as one."
                ) from None
            binary = _text_column_is_binary(data_file, stream.schema, text_column)
            rows, offset = 0, dataset_rows

            def where(row: int, data_file=data_file, offset=offset) -> str:
                return f"{data_file}:row {row} (dataset index {offset + row - 1})"

            while True:
                try:
                    batch = stream.read_next_batch()
                except StopIteration:
                    break
                except (pa.ArrowException, OSError) as err:
                    raise CorpusFormatError(f"{data_file}: unreadable after row {rows} ({err}).") from None
                yield from _column_documents(
                    batch.column(text_column).to_pylist(),
                    rows + 1,
                    where,
                    f"column {text_column!r}",
                    binary,
                    on_decode_error,
                    counts,
                )
                rows += batch.num_rows
            dataset_rows += rows
    if dataset_rows == 0:
        raise CorpusFormatError(f"{directory}: the dataset holds no rows; point data.root elsewhere.")


READERS = {
    "jsonl": read_jsonl,
    "csv": read_csv,
    "tsv": read_tsv,
    "parquet": read_parquet,
    "datasets": read_saved_dataset,
}


def read_records(
    files: list[Path],
    source: str,
    on_decode_error: str = "raise",
    counts: Counter | None = None,
    text_field: str = "text",
    text_column: str = "text",
) -> Iterator[Document]:
    """The documents of ``files`` for a record ``source`` (see :func:`bert_lm.corpus.readers.read_documents`)."""
    counts = Counter() if counts is None else counts
    if source == "datasets":
        # A saved dataset is its directory: each directory that holds a listed file, once, in order.
        for directory in dict.fromkeys(path.parent for path in files):
            yield from read_saved_dataset(directory, on_decode_error, counts, text_column)
        return
    option = {"text_field": text_field} if source == "jsonl" else {"text_column": text_column}
    for path in files:
        yield from READERS[source](path, on_decode_error, counts, **option)

"""Reader (and writer) for the official KLUE NER v1.1 TSV format.

The format is character-level BIO tagging::

    ## 토큰, 레이블 구분자 : \\t          <- header comments, before the first sentence
    ## klue-ner-v1_dev_00012-nsmc<TAB>중견 연기자들과 주인공 <김재원:PS>의 ...
    중<TAB>O                           <- one line per character
     <TAB>O                            <- a space is a character of its own
    김<TAB>B-PS
    재<TAB>I-PS
    ...
                                       <- blank line between sentences

The ``## <id><TAB><inline-tagged sentence>`` line is kept only for its id: the
character lines are the annotation of record (the inline copy has known typos in
KLUE, e.g. ``<19:QT>, 20기:QT>``). Note that one header line of KLUE itself contains
a tab (``## 컬럼명 : CHAR<TAB>NE_TAG``): a ``##`` line is a sentence line only when
character lines follow it.

KLUE tags a space *inside* an entity as ``I-X`` (``<오후 8시:TI>`` -> 오 B-TI, 후
I-TI, space I-TI, 8 I-TI, 시 I-TI); the reader keeps spaces and their tags, so
``len(text) == len(tags)`` and character offsets match the raw sentence.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

ENTITY_TYPES = ("DT", "LC", "OG", "PS", "QT", "TI")

# The 13 tags in the order of the HF `klue`/`ner` dataset's ClassLabel (KLUE's own
# baseline lists the types PS, LC, OG, DT, TI, QT instead: the order sets label ids,
# which must not change between training and inference, and no metric depends on it).
KLUE_NER_LABELS = [
    "B-DT", "I-DT", "B-LC", "I-LC", "B-OG", "I-OG",
    "B-PS", "I-PS", "B-QT", "I-QT", "B-TI", "I-TI", "O",
]  # fmt: skip

_COMMENT_PREFIX = "##"
_UTF8_BOM = b"\xef\xbb\xbf"


class KlueFormatError(ValueError):
    """A line of a KLUE NER file does not follow the format; names file and line."""

    def __init__(self, path: str | os.PathLike, line_number: int, message: str):
        self.path = str(path)
        self.line_number = line_number
        super().__init__(f"{self.path}:{line_number}: {message}")


@dataclass(frozen=True)
class NerSentence:
    """One sentence: its KLUE id, its text, and one BIO tag per character of it."""

    id: str
    text: str
    tags: list[str]

    def __post_init__(self):
        if len(self.text) != len(self.tags):
            raise ValueError(f"sentence {self.id!r}: {len(self.text)} characters but {len(self.tags)} tags")


# ---------------------------------------------------------------------------- read
def _decoded_lines(path: Path) -> list[tuple[int, str]]:
    """(1-based line number, text) for every line; CRLF, a BOM and bad UTF-8 handled."""
    raw = path.read_bytes()
    if raw.startswith(_UTF8_BOM):
        raw = raw[len(_UTF8_BOM) :]
    lines = []
    # Split on b"\n" only: str.splitlines() would also split on U+2028 and friends,
    # which are legitimate characters of a sentence.
    for number, raw_line in enumerate(raw.split(b"\n"), start=1):
        if raw_line.endswith(b"\r"):
            raw_line = raw_line[:-1]
        try:
            line = raw_line.decode("utf-8")
        except UnicodeDecodeError as err:
            raise KlueFormatError(
                path,
                number,
                f"not valid UTF-8 (byte {err.start} of the line: {raw_line[err.start : err.start + 4]!r}); "
                "KLUE NER files are UTF-8 text",
            ) from None
        lines.append((number, line))
    if lines and lines[-1][1] == "":  # the split after a final newline
        lines.pop()
    return lines


def _is_blank(line: str) -> bool:
    # An empty line separates sentences; some KLUE derivatives use a lone tab.
    # Not line.strip() == "": " \t" is a space character whose tag is missing,
    # which must be reported, not read as the end of the sentence.
    return line in ("", "\t")


def read_klue_ner(path: str | os.PathLike, labels: Sequence[str] = KLUE_NER_LABELS) -> list[NerSentence]:
    """Read a KLUE NER TSV file into sentences; any malformed line raises
    :class:`KlueFormatError` with the file path and 1-based line number.

    ``labels`` is the tag set (from the task config); a tag outside it is an error.
    Tag *sequences* are not checked against IOB2: KLUE has a few entities that begin
    with a space tagged ``B-X``, and the metrics treat an ``I-X`` without a ``B-X``
    (gold or predicted: predictions are not repaired) the way seqeval's strict
    IOB2 mode does.
    """
    path = Path(path)
    allowed = set(labels)
    sentences: list[NerSentence] = []
    # The block being read: the pending "##" line (maybe the sentence line) and chars.
    pending_comment: tuple[int, str] | None = None
    sentence_id: str | None = None
    chars: list[str] = []
    tags: list[str] = []

    def finish_sentence():
        nonlocal sentence_id, chars, tags
        if sentence_id is not None:
            sentences.append(NerSentence(sentence_id, "".join(chars), tags))
        sentence_id, chars, tags = None, [], []

    for number, line in _decoded_lines(path):
        if _is_blank(line):
            finish_sentence()
            pending_comment = None
            continue
        if line.startswith(_COMMENT_PREFIX) and sentence_id is None:
            # A comment; it is the sentence line if character lines follow it.
            pending_comment = (number, line)
            continue
        if line.startswith(_COMMENT_PREFIX) and sentence_id is not None:
            raise KlueFormatError(
                path,
                number,
                "a `##` line inside a sentence; expected `<character>\\t<tag>` lines, "
                "and an empty line before the next `## <id>\\t<sentence>` line",
            )
        # A character line.
        if sentence_id is None:
            if pending_comment is None:
                raise KlueFormatError(
                    path,
                    number,
                    "character line with no `## <id>\\t<sentence>` line before it; "
                    "every sentence starts with its `## <id>\\t<inline-tagged sentence>` line",
                )
            comment_number, comment = pending_comment
            header = comment[len(_COMMENT_PREFIX) :].lstrip(" ")
            if "\t" not in header:
                raise KlueFormatError(
                    path,
                    comment_number,
                    "expected the sentence line `## <id>\\t<inline-tagged sentence>` "
                    f"(id and sentence separated by a tab), got {comment!r}",
                )
            sentence_id = header.split("\t", 1)[0].strip()
            if not sentence_id:
                raise KlueFormatError(path, comment_number, "empty sentence id in `## <id>\\t<sentence>` line")
            pending_comment = None
        columns = line.split("\t")
        if len(columns) != 2:
            raise KlueFormatError(
                path,
                number,
                f"expected 2 tab-separated columns `<character>\\t<tag>`, got {len(columns)}: {line!r}",
            )
        char, tag = columns
        if len(char) != 1:
            raise KlueFormatError(
                path,
                number,
                f"expected exactly one character in column 1, got {len(char)}: {char!r}",
            )
        if tag not in allowed:
            raise KlueFormatError(
                path,
                number,
                f"unknown tag {tag!r} in column 2; expected one of {', '.join(labels)}",
            )
        chars.append(char)
        tags.append(tag)
    finish_sentence()
    return sentences


# ------------------------------------------------------------------ tag sequences
def entity_spans(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """Entities of a BIO sequence as ``(type, start, end)``, end exclusive.

    Strict IOB2, as seqeval's ``mode="strict", scheme=IOB2`` (the KLUE metric) reads
    it: an entity is ``B-X`` followed by ``I-X``s; an ``I-X`` that does not continue
    an open ``X`` entity belongs to no entity at all.
    """
    spans = []
    open_type, open_start = None, 0
    for i, tag in enumerate(tags):
        prefix, _, entity_type = tag.partition("-")
        if prefix == "I" and entity_type == open_type:
            continue
        if open_type is not None:
            spans.append((open_type, open_start, i))
            open_type = None
        if prefix == "B":
            open_type, open_start = entity_type, i
    if open_type is not None:
        spans.append((open_type, open_start, len(tags)))
    return spans


_INLINE_ENTITY = re.compile(r"<([^<>]+?):(" + "|".join(ENTITY_TYPES) + r")>")


def parse_inline(tagged: str) -> tuple[str, list[str]]:
    """``"<김재원:PS>의 연기"`` -> (``"김재원의 연기"``, per-character tags).

    Spaces inside an entity get ``I-X``, as in KLUE's character lines.
    """
    text_parts: list[str] = []
    tags: list[str] = []
    pos = 0
    for match in _INLINE_ENTITY.finditer(tagged):
        before = tagged[pos : match.start()]
        text_parts.append(before)
        tags.extend("O" * len(before))
        surface, entity_type = match.group(1), match.group(2)
        text_parts.append(surface)
        tags.extend([f"B-{entity_type}"] + [f"I-{entity_type}"] * (len(surface) - 1))
        pos = match.end()
    rest = tagged[pos:]
    text_parts.append(rest)
    tags.extend("O" * len(rest))
    return "".join(text_parts), tags


def to_inline(text: str, tags: Sequence[str]) -> str:
    """The inverse of :func:`parse_inline`: ``<surface:TYPE>`` around each entity."""
    out, pos = [], 0
    for entity_type, start, end in entity_spans(tags):
        out.append(text[pos:start])
        out.append(f"<{text[start:end]}:{entity_type}>")
        pos = end
    out.append(text[pos:])
    return "".join(out)


# --------------------------------------------------------------------------- write
KLUE_HEADER = (
    "## 토큰, 레이블 구분자 : \\t",
    "## 토큰 구분자 : \\n",
    "## 문장 구분자 : \\n\\n",
    "## 주석 : ##",
    "## 컬럼명 : CHAR\tNE_TAG",
)


def format_klue_ner(sentences: Iterable[NerSentence], header: Sequence[str] = KLUE_HEADER) -> str:
    """Sentences as KLUE NER TSV text (what :func:`read_klue_ner` reads back)."""
    lines = list(header)
    for sentence in sentences:
        if "\t" in sentence.id or "\n" in sentence.text or "\t" in sentence.text:
            raise ValueError(f"sentence {sentence.id!r}: ids and texts cannot contain tabs or newlines")
        lines.append(f"## {sentence.id}\t{to_inline(sentence.text, sentence.tags)}")
        lines.extend(f"{char}\t{tag}" for char, tag in zip(sentence.text, sentence.tags, strict=True))
        lines.append("")
    return "\n".join(lines) + "\n"

"""The KLUE NER TSV reader: the bundled sample, the real files, and every kind of
malformed line (each error must name the file and the 1-based line)."""

import random
import time
from collections import Counter
from pathlib import Path

import pytest
from seqeval.scheme import IOB2, Entities

from finetune.ner.download import KlueDownloadError, download_klue_ner, find_local_files
from finetune.ner.klue_ner import (
    ENTITY_TYPES,
    KLUE_NER_LABELS,
    KlueFormatError,
    NerSentence,
    entity_spans,
    format_klue_ner,
    parse_inline,
    read_klue_ner,
    to_inline,
)
from tests.conftest import REPO_ROOT, shared_data_path

SAMPLE_DIR = REPO_ROOT / "finetune" / "sample"
SAMPLE_TRAIN = SAMPLE_DIR / "klue-ner-sample-train.tsv"
SAMPLE_DEV = SAMPLE_DIR / "klue-ner-sample-dev.tsv"

HEADER = "## 토큰, 레이블 구분자 : \\t\n## 컬럼명 : CHAR\tNE_TAG\n"
GOOD = HEADER + "## s1\t<김재원:PS>의 연기\n김\tB-PS\n재\tI-PS\n원\tI-PS\n의\tO\n \tO\n연\tO\n기\tO\n\n"


def write(tmp_path: Path, content: str | bytes, name: str = "ner.tsv") -> Path:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


# ----------------------------------------------------------------------- sample
@pytest.mark.parametrize("path, expected", [(SAMPLE_TRAIN, 150), (SAMPLE_DEV, 40)])
def test_sample_reads_with_every_entity_type(path, expected):
    sentences = read_klue_ner(path)
    assert len(sentences) == expected
    assert len({s.id for s in sentences}) == expected
    types = Counter(t for s in sentences for t, _, _ in entity_spans(s.tags))
    assert set(types) == set(ENTITY_TYPES), types
    for s in sentences:
        assert len(s.text) == len(s.tags) > 0
        # The sample follows KLUE's convention for a space inside an entity.
        for _, start, end in entity_spans(s.tags):
            assert not s.text[start].isspace() and not s.text[end - 1].isspace()


def test_sample_splits_do_not_share_sentences():
    train = {s.text for s in read_klue_ner(SAMPLE_TRAIN)}
    dev = {s.text for s in read_klue_ner(SAMPLE_DEV)}
    assert not train & dev


def test_sample_inline_line_agrees_with_character_lines():
    # The sample's `##` lines are written from the character lines, so they must agree.
    lines = SAMPLE_DEV.read_text(encoding="utf-8").splitlines()
    inline = {line[3:].split("\t")[0]: line.split("\t", 1)[1] for line in lines if line.startswith("## klue")}
    for s in read_klue_ner(SAMPLE_DEV):
        assert parse_inline(inline[s.id]) == (s.text, s.tags)


def test_format_then_read_round_trips(tmp_path):
    sentences = read_klue_ner(SAMPLE_TRAIN)
    assert read_klue_ner(write(tmp_path, format_klue_ner(sentences))) == sentences
    assert format_klue_ner(sentences) == SAMPLE_TRAIN.read_text(encoding="utf-8")


# ----------------------------------------------------------------- real data
@pytest.mark.parametrize("split, expected", [("train", 3992), ("dev", 519)])
def test_real_klue_split_files(split, expected):
    path = shared_data_path("klue-ner", f"klue-ner-v1.1_split-{split}.tsv")
    sentences = read_klue_ner(path)
    assert len(sentences) == expected
    first = sentences[0]
    assert first.id.startswith("klue-ner-v1_")
    assert all(len(s.text) == len(s.tags) for s in sentences)
    if split == "dev":
        assert first.text.startswith("중견 연기자들과 주인공 김재원의")
        assert entity_spans(first.tags)[0] == ("PS", 13, 16)


# ----------------------------------------------------------------- encodings
def test_crlf_and_bom_read_like_lf(tmp_path):
    expected = read_klue_ner(write(tmp_path, GOOD))
    crlf = b"\xef\xbb\xbf" + GOOD.replace("\n", "\r\n").encode("utf-8")
    assert read_klue_ner(write(tmp_path, crlf, "crlf.tsv")) == expected
    assert expected == [NerSentence("s1", "김재원의 연기", ["B-PS", "I-PS", "I-PS", "O", "O", "O", "O"])]


def test_lone_tab_separator_and_missing_final_blank_line(tmp_path):
    two = GOOD.rstrip("\n") + "\n\t\n## s2\t<서울:LC>\n서\tB-LC\n울\tI-LC"
    sentences = read_klue_ner(write(tmp_path, two))
    assert [s.id for s in sentences] == ["s1", "s2"]
    assert sentences[1].text == "서울"


def test_unicode_line_separator_is_a_character(tmp_path):
    # U+2028 must not be taken for a line break (str.splitlines would).
    content = HEADER + "## s\tx\u2028y\nx\tO\n\u2028\tO\ny\tO\n\n"
    (sentence,) = read_klue_ner(write(tmp_path, content))
    assert sentence.text == "x\u2028y"


def test_custom_label_set_rejects_other_tags(tmp_path):
    path = write(tmp_path, GOOD)
    with pytest.raises(KlueFormatError, match="unknown tag 'B-PS'") as info:
        read_klue_ner(path, labels=["B-LC", "I-LC", "O"])
    assert info.value.line_number == 4


# --------------------------------------------------------------------- errors
BAD_FILES = {
    "three columns": (GOOD.replace("재\tI-PS", "재\tI-PS\textra"), 5, "expected 2 tab-separated columns"),
    "one column": (GOOD.replace("재\tI-PS", "재 I-PS"), 5, "expected 2 tab-separated columns"),
    "unknown tag": (GOOD.replace("재\tI-PS", "재\tI-PER"), 5, "unknown tag 'I-PER'"),
    "lower-case tag": (GOOD.replace("의\tO", "의\to"), 7, "unknown tag 'o'"),
    "two characters": (GOOD.replace("재\tI-PS", "재원\tI-PS"), 5, "exactly one character"),
    "empty character": (GOOD.replace("재\tI-PS", "\tI-PS"), 5, "exactly one character"),
    "no sentence line": ("김\tB-PS\n재\tI-PS\n", 1, "no `## <id>"),
    "sentence line without tab": (HEADER + "## s1 김재\n김\tB-PS\n", 3, "id and sentence separated by a tab"),
    "missing blank line": (GOOD.rstrip("\n") + "\n## s2\t서\n서\tO\n", 11, "inside a sentence"),
    # A space whose tag is missing is not a sentence separator.
    "space without tag": (GOOD.replace(" \tO", " \t"), 8, "unknown tag ''"),
}


@pytest.mark.parametrize("name", BAD_FILES)
def test_malformed_line_names_file_and_line(tmp_path, name):
    content, line_number, message = BAD_FILES[name]
    path = write(tmp_path, content)
    with pytest.raises(KlueFormatError, match=message) as info:
        read_klue_ner(path)
    assert isinstance(info.value, ValueError)
    assert info.value.line_number == line_number
    assert str(info.value).startswith(f"{path}:{line_number}: ")


def test_non_utf8_byte_names_file_and_line(tmp_path):
    content = GOOD.encode("utf-8").replace("연\tO".encode(), b"\xff\xfe\tO")
    path = write(tmp_path, content)
    with pytest.raises(KlueFormatError, match="not valid UTF-8") as info:
        read_klue_ner(path)
    assert info.value.line_number == 9
    assert str(path) in str(info.value)


# -------------------------------------------------------------- tag sequences
def test_entity_spans_match_seqeval_strict_iob2():
    rng = random.Random(0)
    tags = ["O", "B-PS", "I-PS", "B-LC", "I-LC"]
    sequences = [[rng.choice(tags) for _ in range(rng.randint(0, 12))] for _ in range(500)]
    sequences += [s.tags for s in read_klue_ner(SAMPLE_TRAIN)]
    expected = Entities(sequences, IOB2).entities
    for sequence, entities in zip(sequences, expected, strict=True):
        assert entity_spans(sequence) == [(e.tag, e.start, e.end) for e in entities]


def test_inline_markup_round_trip():
    text, tags = parse_inline("<01:23:39:TI>에 <오후 8시:TI>, <남:OG><북:OG> 회담")
    assert text == "01:23:39에 오후 8시, 남북 회담"
    assert tags[:9] == ["B-TI"] + ["I-TI"] * 7 + ["O"]
    assert tags[10:15] == ["B-TI", "I-TI", "I-TI", "I-TI", "I-TI"]  # the inner space is I-TI
    assert tags[17:19] == ["B-OG", "B-OG"]  # adjacent entities stay apart
    assert to_inline(text, tags) == "<01:23:39:TI>에 <오후 8시:TI>, <남:OG><북:OG> 회담"


def test_default_labels_are_the_thirteen_klue_tags():
    assert len(KLUE_NER_LABELS) == 13 and KLUE_NER_LABELS[-1] == "O"
    assert {t[2:] for t in KLUE_NER_LABELS if t != "O"} == set(ENTITY_TYPES)


# ------------------------------------------------------------------- download
SAMPLE_NAMES = {"train": SAMPLE_TRAIN.name, "dev": SAMPLE_DEV.name}


def test_offline_download_fails_fast_with_the_way_out(tmp_path):
    started = time.monotonic()
    with pytest.raises(KlueDownloadError, match=r"task\.data_dir=<local dir>") as info:
        download_klue_ner(tmp_path / "cache", base_url="http://127.0.0.1:9/", timeout=2.0)
    assert time.monotonic() - started < 5
    assert "http://127.0.0.1:9/klue-ner-v1.1_train.tsv" in str(info.value)
    assert list((tmp_path / "cache").iterdir()) == []  # no partial file left behind


def test_download_validates_then_caches(tmp_path):
    cache = tmp_path / "cache"
    base_url = SAMPLE_DIR.as_uri() + "/"
    paths = download_klue_ner(cache, base_url=base_url, file_names=SAMPLE_NAMES)
    assert read_klue_ner(paths["dev"]) == read_klue_ner(SAMPLE_DEV)
    # Cached: no request at all the second time, even to an unreachable host.
    assert download_klue_ner(cache, base_url="http://127.0.0.1:9/", file_names=SAMPLE_NAMES) == paths
    # A wrong checksum or a file that is not KLUE NER (an error page) is not cached.
    with pytest.raises(KlueDownloadError, match="SHA-256"):
        download_klue_ner(
            tmp_path / "c2", ["dev"], base_url=base_url, file_names=SAMPLE_NAMES, sha256={"dev": "0" * 64}
        )
    write(tmp_path, "<html>rate limited</html>\n", "page.tsv")
    with pytest.raises(KlueDownloadError, match="not KLUE NER TSV"):
        download_klue_ner(tmp_path / "c3", ["dev"], base_url=tmp_path.as_uri() + "/", file_names={"dev": "page.tsv"})
    assert list((tmp_path / "c2").iterdir()) == [] and list((tmp_path / "c3").iterdir()) == []


def test_local_files_name_what_is_missing(tmp_path):
    assert find_local_files(SAMPLE_DIR, SAMPLE_NAMES) == {"train": SAMPLE_TRAIN, "dev": SAMPLE_DEV}
    with pytest.raises(FileNotFoundError, match="klue-ner-v1.1_dev.tsv"):
        find_local_files(tmp_path)

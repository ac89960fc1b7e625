import json
from collections import Counter

import pytest

from bert_lm.corpus.readers import CorpusFormatError, list_corpus_files, read_documents, read_petitions, read_plain_text
from tests.conftest import SAMPLE_CORPUS, shared_data_path


def test_plain_text_documents_split_on_blank_and_eod(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("가 문장.\n나 문장.\n\n다 문장.\n[EOD]\n라 문장.\n[EOD]\n\n", encoding="utf-8")
    docs = list(read_plain_text(path))
    assert [d.blocks for d in docs] == [["가 문장.", "나 문장."], ["다 문장."], ["라 문장."]]
    assert docs[1].source == f"{path}:4"


def test_bundled_sample_reads(tmp_path):
    docs = list(read_plain_text(SAMPLE_CORPUS))
    assert len(docs) >= 30 and sum(len(d.blocks) for d in docs) >= 300


def test_non_utf8_byte_names_file_and_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes("첫 줄\n".encode() + "둘째 줄\n".encode("cp949") + "셋째 줄\n".encode())
    with pytest.raises(CorpusFormatError, match=r"bad.txt:2: not valid UTF-8.*on_decode_error=skip"):
        list(read_plain_text(path))
    counts = Counter()
    docs = list(read_plain_text(path, on_decode_error="skip", counts=counts))
    assert [d.blocks for d in docs] == [["첫 줄", "셋째 줄"]]
    assert counts["skipped_undecodable_lines"] == 1


def test_empty_file_is_an_error(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("\n[EOD]\n", encoding="utf-8")
    with pytest.raises(CorpusFormatError, match="empty.txt: the file holds no text"):
        list(read_plain_text(path))


def test_missing_path_names_the_key(tmp_path):
    with pytest.raises(FileNotFoundError, match="data.root"):
        list_corpus_files(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="data.file_pattern"):
        list_corpus_files(tmp_path, "petitions_*")


def test_petitions_one_document_per_line(tmp_path):
    path = tmp_path / "petitions_2019-01"
    rows = [{"content": "첫 문단이다.\n둘째 문단이다.", "title": "t"}, {"content": "  ", "title": "빈"}, {"content": "셋째.", "title": "x"}]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    counts = Counter()
    docs = list(read_petitions(path, counts=counts))
    assert [d.blocks for d in docs] == [["첫 문단이다.", "둘째 문단이다."], ["셋째."]]
    assert counts["empty_documents"] == 1


def test_petition_line_without_content(tmp_path):
    path = tmp_path / "petitions_2019-01"
    path.write_text('{"content": "좋다."}\n{"title": "본문 없음"}\n', encoding="utf-8")
    with pytest.raises(CorpusFormatError, match=r"petitions_2019-01:2: no string field 'content'"):
        list(read_petitions(path))


def test_petition_line_not_json(tmp_path):
    path = tmp_path / "p"
    path.write_text('{"content": "좋다."}\nnot json\n', encoding="utf-8")
    with pytest.raises(CorpusFormatError, match=r"p:2: not a JSON object"):
        list(read_petitions(path))


def test_unknown_source_names_the_key(tmp_path):
    with pytest.raises(ValueError, match="data.source"):
        list(read_documents([SAMPLE_CORPUS], "xml"))


def test_real_petitions_archive_reads():
    root = shared_data_path("korean_petitions")
    files = list_corpus_files(root, "petitions_*")
    assert len(files) == 5
    docs = sum(1 for _ in read_documents(files, "petitions"))
    assert 2900 <= docs <= 3138

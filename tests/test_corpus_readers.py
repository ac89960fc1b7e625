import json
from collections import Counter

import pytest

from bert_lm.corpus.cleaning import CleaningConfig
from bert_lm.corpus.prepare import PrepareSettings, prepare_corpus
from bert_lm.corpus.readers import (
    CorpusFormatError,
    list_corpus_files,
    read_documents,
    read_lines,
    read_petitions,
    read_plain_text,
)
from tests.conftest import REPO_ROOT, SAMPLE_CORPUS, shared_data_path


def _compose(overrides):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from bert_lm.config.hydra_setup import setup_hydra

    setup_hydra()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
            return compose(config_name="config", overrides=overrides)
    finally:
        GlobalHydra.instance().clear()


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
    rows = [
        {"content": "첫 문단이다.\n둘째 문단이다.", "title": "t"},
        {"content": "  ", "title": "빈"},
        {"content": "셋째.", "title": "x"},
    ]
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


def test_lines_one_document_per_line_blanks_skipped(tmp_path):
    path = tmp_path / "comments.txt"
    path.write_text("첫 댓글이다. 정말 좋네요ㅋㅋ\n\n   \n둘째 댓글\r\n[EOD]\n  셋째  \n", encoding="utf-8")
    docs = list(read_lines(path))
    assert [d.blocks for d in docs] == [["첫 댓글이다. 정말 좋네요ㅋㅋ"], ["둘째 댓글"], ["셋째"]]
    assert [d.source for d in docs] == [f"{path}:1", f"{path}:4", f"{path}:6"]
    assert [d.blocks for d in read_documents([path, path], "lines")] == [d.blocks for d in docs] * 2


def test_lines_streams_without_reading_the_whole_file(tmp_path):
    path = tmp_path / "comments.txt"
    path.write_text("".join(f"댓글 {i}\n" for i in range(1000)), encoding="utf-8")
    documents = read_lines(path)
    assert next(documents).blocks == ["댓글 0"]  # a generator: one line at a time
    assert sum(1 for _ in documents) == 999


def test_lines_bad_byte_names_file_and_line(tmp_path):
    path = tmp_path / "bad_comments.txt"
    path.write_bytes("좋아요\n\n".encode() + "싫어요\n".encode("cp949") + "최고\n".encode())
    with pytest.raises(CorpusFormatError, match=r"bad_comments.txt:3: not valid UTF-8.*on_decode_error=skip"):
        list(read_lines(path))
    counts = Counter()
    docs = list(read_documents([path], "lines", on_decode_error="skip", counts=counts))
    assert [d.blocks for d in docs] == [["좋아요"], ["최고"]]
    assert counts["skipped_undecodable_lines"] == 1


def test_lines_empty_file_is_an_error(tmp_path):
    path = tmp_path / "blank.txt"
    path.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(CorpusFormatError, match="blank.txt: the file holds no text.*data.root"):
        list(read_lines(path))


def test_lines_prepare_splits_comments_into_sentences(tmp_path):
    corpus = tmp_path / "comments.txt"
    comments = [
        "진짜 재밌어요. 다음 주도 본다ㅋㅋㅋㅋ!!!!!",
        "",
        "별로예요. 연락처 010-1234-5678",
        "진짜 재밌어요. 다음 주도 본다ㅋㅋㅋ!!",
    ]
    corpus.write_text("\n".join(comments) + "\n", encoding="utf-8")
    settings = PrepareSettings(source="lines", root=str(corpus), split_sentences=True, valid_ratio=0.0)
    cleaning = CleaningConfig(squeeze_repeats=True, mask_personal_data=True)
    stats = prepare_corpus(settings, cleaning, tmp_path / "out", show_progress=False)
    # The fourth comment is the first after squeezing: a duplicate, removed.
    assert stats["documents"] == {"train": 2} and stats["duplicate_documents_removed"] == 1
    train = (tmp_path / "out" / "train.txt").read_text(encoding="utf-8").splitlines()
    assert train == ["진짜 재밌어요.", "다음 주도 본다ㅋㅋ!!", "[EOD]", "별로예요.", "연락처 [PHONE]", "[EOD]"]


def test_real_comment_file_one_document_per_line():
    path = shared_data_path("korean-hate-speech", "unlabeled_comments_5.txt")
    with open(path, encoding="utf-8") as handle:
        non_blank = sum(1 for line in handle if line.strip())
    documents = sum(1 for _ in read_documents(list_corpus_files(path), "lines"))
    assert documents == non_blank == 33_893


def test_comments_config_prepares_a_lines_file(tmp_path):
    from omegaconf.errors import MissingMandatoryValue

    from bert_lm.corpus.prepare import load_stats
    from bert_lm.training.corpus_pipeline import ensure_prepared_corpus

    with pytest.raises(MissingMandatoryValue, match="data.root"):  # no comment file ships with the project
        ensure_prepared_corpus(_compose(["data=comments"]).data, tmp_path / "cache", show_progress=False)
    corpus = tmp_path / "comments.txt"
    corpus.write_text("".join(f"{i}번째 댓글입니다ㅋㅋㅋㅋ. 좋아요!!!\n\n" for i in range(40)), encoding="utf-8")
    cfg = _compose(["data=comments", f"data.root={corpus}"])
    assert cfg.data.source == "lines" and cfg.data.split_sentences and cfg.data.cleaning.squeeze_repeats
    stats = load_stats(ensure_prepared_corpus(cfg.data, tmp_path / "cache", show_progress=False))
    assert sum(stats["documents"].values()) == 40 and stats["documents"]["valid"] >= 1
    assert sum(stats["sentences"].values()) == 80 and stats["cleaning_changed"]["squeeze_repeats"] == 40

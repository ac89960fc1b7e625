import json

import pytest

from bert_lm.corpus.cleaning import CleaningConfig
from bert_lm.corpus.prepare import PrepareSettings, format_stats, is_prepared, prepare_corpus, prepared_dir_for
from tests.conftest import SAMPLE_CORPUS


def _documents(path):
    docs, current = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line == "[EOD]":
            docs.append(current)
            current = []
        else:
            current.append(line)
    assert current == [], "every document must end with [EOD]"
    return docs


def test_sample_prepares_with_document_level_split(tmp_path):
    settings = PrepareSettings(source="plain", root=str(SAMPLE_CORPUS), valid_ratio=0.2, split_seed=1)
    stats = prepare_corpus(settings, CleaningConfig(), tmp_path / "out", show_progress=False)
    train, valid = _documents(tmp_path / "out" / "train.txt"), _documents(tmp_path / "out" / "valid.txt")
    assert len(train) == stats["documents"]["train"] and len(valid) == stats["documents"]["valid"]
    assert valid and train
    # No document is in both splits, and the duplicates of the sample were removed.
    assert not {tuple(d) for d in train} & {tuple(d) for d in valid}
    assert stats["duplicate_documents_removed"] == 2
    assert "duplicate documents removed: 2" in format_stats(stats)
    assert json.loads((tmp_path / "out" / "stats.json").read_text())["characters"] == stats["characters"]


def test_what_never_reached_the_corpus_is_said_on_the_prepared_line(tmp_path):
    corpus = tmp_path / "c.jsonl"
    records = [{"text": f"{i}번째 글입니다. 좋아요!"} for i in range(20)] + [{"text": None}, {"text": "ㅋ"}]
    corpus.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    settings = PrepareSettings(source="jsonl", root=str(corpus), split_sentences=True, valid_ratio=0.2)
    stats = prepare_corpus(settings, CleaningConfig(), tmp_path / "out", show_progress=False)
    left_out = format_stats(stats).split("; left out: ")[1]
    # The null text is counted by the reader, the one-character comment by the cleaning.
    assert stats["reader"] and stats["dropped"]
    expected = {**stats["reader"], **stats["dropped"]}
    assert left_out == ", ".join(f"{key} {count}" for key, count in sorted(expected.items()))


def test_split_is_deterministic_per_seed(tmp_path):
    def split(seed, name):
        settings = PrepareSettings(source="plain", root=str(SAMPLE_CORPUS), valid_ratio=0.3, split_seed=seed)
        prepare_corpus(settings, CleaningConfig(), tmp_path / name, show_progress=False)
        return (tmp_path / name / "valid.txt").read_text()

    assert split(7, "a") == split(7, "b")
    assert split(7, "a") != split(8, "c")


def test_petitions_are_split_into_sentences(tmp_path):
    corpus = tmp_path / "petitions_2020-01"
    corpus.write_text(json.dumps({"content": "첫 문장이다. 둘째 문장입니다 셋째 문장이에요?"}, ensure_ascii=False) + "\n"
                      + json.dumps({"content": "다른 청원입니다."}, ensure_ascii=False) + "\n", encoding="utf-8")
    settings = PrepareSettings(source="petitions", root=str(tmp_path), file_pattern="petitions_*",
                               split_sentences=True, valid_ratio=0.5, split_seed=0)
    prepare_corpus(settings, CleaningConfig(), tmp_path / "out", show_progress=False)
    docs = _documents(tmp_path / "out" / "train.txt") + _documents(tmp_path / "out" / "valid.txt")
    assert sorted(docs) == sorted([["첫 문장이다.", "둘째 문장입니다", "셋째 문장이에요?"], ["다른 청원입니다."]])


def test_output_dir_changes_with_inputs_and_settings(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("가나다.\n[EOD]\n", encoding="utf-8")
    settings = PrepareSettings(source="plain", root=str(corpus))
    base = prepared_dir_for(settings, CleaningConfig(), tmp_path)
    assert base == prepared_dir_for(settings, CleaningConfig(), tmp_path)
    assert base != prepared_dir_for(settings, CleaningConfig(squeeze_repeats=True), tmp_path)
    assert base != prepared_dir_for(PrepareSettings(source="plain", root=str(corpus), valid_ratio=0.5), CleaningConfig(), tmp_path)
    corpus.write_text("가나다라.\n[EOD]\n", encoding="utf-8")
    assert base != prepared_dir_for(settings, CleaningConfig(), tmp_path)


def test_failed_prepare_leaves_no_output(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_bytes("좋은 문장.\n[EOD]\n".encode() + b"\xff\xfe bad\n")
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="c.txt:3"):
        prepare_corpus(PrepareSettings(source="plain", root=str(corpus)), CleaningConfig(), out, show_progress=False)
    assert not is_prepared(out) and not out.exists()


def test_bad_valid_ratio_names_the_key():
    with pytest.raises(ValueError, match="data.valid_ratio"):
        PrepareSettings(source="plain", root=".", valid_ratio=1.5)

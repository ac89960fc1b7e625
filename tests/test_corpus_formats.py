"""Record formats (jsonl, csv, tsv, parquet, saved datasets) and Korpora's namuwikitext."""

import json
from collections import Counter

import pyarrow as pa
import pyarrow.ipc
import pyarrow.parquet as pq
import pytest
from omegaconf import OmegaConf

from bert_lm.config.schema import DataSchema
from bert_lm.corpus import formats
from bert_lm.corpus.cleaning import CleaningConfig
from bert_lm.corpus.prepare import PrepareSettings, prepare_corpus
from bert_lm.corpus.readers import CorpusFormatError, list_corpus_files, read_documents, read_namuwiki
from tests.conftest import REPO_ROOT


def _blocks(documents):
    return [d.blocks for d in documents]


def _write_jsonl(path, records):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")


def _save_dataset(directory, shards, batch_rows=2, schema=None):
    """A directory laid out as datasets' ``Dataset.save_to_disk`` writes it: one Arrow IPC
    *stream* per shard (datasets' ArrowWriter is a ``pa.RecordBatchStreamWriter``), named
    ``data-0000i-of-0000N.arrow``, plus ``dataset_info.json`` and ``state.json`` (sorted keys)."""
    schema = schema or pa.schema([("id", pa.int64()), ("text", pa.string())])
    features = {"id": {"dtype": "int64", "_type": "Value"}, "text": {"dtype": "string", "_type": "Value"}}
    schema = schema.with_metadata({"huggingface": json.dumps({"info": {"features": features}})})
    directory.mkdir(parents=True)
    names = [f"data-{i:05d}-of-{len(shards):05d}.arrow" for i in range(len(shards))]
    for name, rows in zip(names, shards, strict=True):
        table = pa.Table.from_pylist(rows, schema=schema)
        with pa.OSFile(str(directory / name), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
            for batch in table.to_batches(max_chunksize=batch_rows):
                writer.write_batch(batch)
    info = {"citation": "", "description": "", "features": features, "homepage": "", "license": ""}
    (directory / "dataset_info.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
    state = {
        "_data_files": [{"filename": name} for name in names],
        "_fingerprint": "1f2e3d4c5b6a7988",
        "_format_columns": None,
        "_format_kwargs": {},
        "_format_type": None,
        "_output_all_columns": False,
        "_split": "train",
    }
    (directory / "state.json").write_text(json.dumps(state, indent=2, sort_keys=True), encoding="utf-8")
    return directory


# --- jsonl ---------------------------------------------------------------------------------------


def test_jsonl_one_document_per_record(tmp_path):
    path = tmp_path / "corpus.jsonl"
    records = [
        {"text": "첫 문단이다.\n\n둘째 문단이다.", "id": 1},
        {"text": "   ", "id": 2},
        {"text": None, "id": 3},
        {"text": "[EOD]\n셋째.", "id": 4},
    ]
    _write_jsonl(path, records)
    counts = Counter()
    docs = list(read_documents([path], "jsonl", counts=counts))
    assert _blocks(docs) == [["첫 문단이다.", "둘째 문단이다."], ["셋째."]]
    assert [d.source for d in docs] == [f"{path}:1", f"{path}:4"]
    assert counts == {"empty_documents": 1, "null_texts": 1}
    _write_jsonl(path, [{"body": "본문."}])
    assert _blocks(read_documents([path], "jsonl", text_field="body")) == [["본문."]]


def test_jsonl_bad_input_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "좋다."}\n{"title": "t", "body": "b"}\n', encoding="utf-8")
    with pytest.raises(CorpusFormatError, match=r"bad.jsonl:2: no field 'text'; this record has \['body', 'title'\]"):
        list(read_documents([path], "jsonl"))
    path.write_text('{"text": "좋다."}\n{"text": "끝이 없다\n', encoding="utf-8")
    with pytest.raises(CorpusFormatError, match=r"bad.jsonl:2: not a JSON object"):
        list(read_documents([path], "jsonl"))
    path.write_text('{"text": 12}\n', encoding="utf-8")
    with pytest.raises(CorpusFormatError, match=r"bad.jsonl:1: field 'text' holds a int \(12\), not a string"):
        list(read_documents([path], "jsonl"))
    path.write_text('["text"]\n', encoding="utf-8")
    with pytest.raises(CorpusFormatError, match=r"bad.jsonl:1: a JSON list, not an object"):
        list(read_documents([path], "jsonl"))
    path.write_bytes('{"text": "하나"}\n'.encode() + '{"text": "둘"}\n'.encode("cp949") + b'{"text": "x"}\n')
    with pytest.raises(CorpusFormatError, match=r"bad.jsonl:2: not valid UTF-8"):
        list(read_documents([path], "jsonl"))
    counts = Counter()
    assert _blocks(read_documents([path], "jsonl", "skip", counts)) == [["하나"], ["x"]]
    assert counts["skipped_undecodable_lines"] == 1


def test_prepare_corpus_on_jsonl_writes_train_and_valid(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    _write_jsonl(corpus, [{"text": f"{i}번째 글입니다. 문장이 둘 있어요!"} for i in range(20)])
    settings = PrepareSettings(source="jsonl", root=str(corpus), split_sentences=True, valid_ratio=0.2, split_seed=3)
    stats = prepare_corpus(settings, CleaningConfig(), tmp_path / "out", show_progress=False)
    assert stats["documents"]["train"] + stats["documents"]["valid"] == 20 and stats["documents"]["valid"] >= 1
    train = (tmp_path / "out" / "train.txt").read_text(encoding="utf-8").splitlines()
    valid = (tmp_path / "out" / "valid.txt").read_text(encoding="utf-8").splitlines()
    assert train[:3] == [train[0], "문장이 둘 있어요!", "[EOD]"] and train[0].endswith("번째 글입니다.")
    assert len(train) + len(valid) == 60  # two sentences and [EOD] per document, none split across files


# --- csv / tsv -----------------------------------------------------------------------------------


def test_csv_quoted_fields_and_line_numbers(tmp_path):
    path = tmp_path / "corpus.csv"
    path.write_text(
        '\ufeffid,text,label\n1,"쉼표, 그리고 ""따옴표"".",0\n2,"여러 줄\n둘째 줄",1\n\n3,,0\n4,끝.,1\n',
        encoding="utf-8",
    )
    counts = Counter()
    docs = list(read_documents([path], "csv", counts=counts))
    assert _blocks(docs) == [['쉼표, 그리고 "따옴표".'], ["여러 줄", "둘째 줄"], ["끝."]]
    assert [d.source for d in docs] == [f"{path}:2", f"{path}:3", f"{path}:7"]
    assert counts["empty_documents"] == 1
    assert _blocks(read_documents([path], "csv", text_column="label")) == [["0"], ["1"], ["0"], ["1"]]


def test_csv_bad_input_names_file_and_line(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("id,text\n1,좋다\n2,쉼표가, 따옴표 없이\n", encoding="utf-8")
    with pytest.raises(CorpusFormatError, match=r"bad.csv:3: 3 fields, but the header \(line 1\) has 2"):
        list(read_documents([path], "csv"))
    path.write_text("id,body\n1,좋다\n", encoding="utf-8")
    with pytest.raises(CorpusFormatError, match=r"bad.csv:1: no column 'text'.*\['id', 'body'\].*data.text_column"):
        list(read_documents([path], "csv"))
    path.write_text('id,text\n1,좋다\n2,"닫히지 않은 따옴표\n', encoding="utf-8")
    with pytest.raises(CorpusFormatError, match=r"bad.csv:3: not valid CSV"):
        list(read_documents([path], "csv"))
    path.write_bytes("id,text\n1,좋다\n".encode() + "2,싫다\n".encode("cp949"))
    with pytest.raises(CorpusFormatError, match=r"bad.csv:3: not valid UTF-8"):
        list(read_documents([path], "csv"))
    path.write_text("id,text\n\n", encoding="utf-8")
    with pytest.raises(CorpusFormatError, match=r"bad.csv: the file holds a header row but no data rows"):
        list(read_documents([path], "csv"))


def test_csv_long_field_and_field_limit_restored(tmp_path):
    path = tmp_path / "long.csv"
    long_text = "가" * 200_000  # over the csv module's default 128 KiB field limit
    path.write_text(f"text\n{long_text}\n", encoding="utf-8")
    import csv

    before = csv.field_size_limit()
    assert _blocks(read_documents([path], "csv")) == [[long_text]]
    assert csv.field_size_limit() == before


def test_tsv_reads_quotes_literally(tmp_path):
    path = tmp_path / "corpus.tsv"
    path.write_text('text\tlabel\n"따옴표" 그대로\t1\n둘째\t0\n', encoding="utf-8")
    assert _blocks(read_documents([path], "tsv")) == [['"따옴표" 그대로'], ["둘째"]]
    path.write_text("text\tlabel\n좋다\t1\n탭이\t섞인\t0\n", encoding="utf-8")
    with pytest.raises(CorpusFormatError, match=r"corpus.tsv:3: 3 fields, but the header \(line 1\) has 2.*no tab"):
        list(read_documents([path], "tsv"))


# --- parquet -------------------------------------------------------------------------------------


def _write_parquet(path, texts, row_group_size=3, text_type=None):
    table = pa.table({"id": list(range(len(texts))), "text": pa.array(texts, type=text_type or pa.string())})
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def test_parquet_reads_a_batch_at_a_time(tmp_path, monkeypatch):
    texts = [f"{i}번째 문서." for i in range(10)]
    texts[4], texts[7] = "", None
    path = _write_parquet(tmp_path / "corpus.parquet", texts)
    assert pq.ParquetFile(path).num_row_groups == 4
    batches = []
    real_iter_batches = pq.ParquetFile.iter_batches

    def spy(self, *args, **kwargs):
        for batch in real_iter_batches(self, *args, **kwargs):
            batches.append(batch.num_rows)
            yield batch

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", spy)
    counts = Counter()
    docs = formats.read_parquet(path, counts=counts, batch_rows=2)
    assert next(docs).blocks == ["0번째 문서."] and batches == [2]  # one batch read, not the file
    rest = list(docs)
    assert [d.blocks[0] for d in rest] == [texts[i] for i in (1, 2, 3, 5, 6, 8, 9)]
    assert rest[-1].source == f"{path}:row 10"
    assert max(batches) <= 2 and sum(batches) == 10
    assert counts == {"empty_documents": 1, "null_texts": 1}


def test_parquet_bad_input_names_file_and_row(tmp_path):
    path = _write_parquet(tmp_path / "c.parquet", ["좋다."])
    with pytest.raises(CorpusFormatError, match=r"c.parquet: no column 'body'; the columns are \['id', 'text'\]"):
        list(read_documents([path], "parquet", text_column="body"))
    with pytest.raises(CorpusFormatError, match=r"c.parquet: column 'id' holds int64, not text.*\(text\)"):
        list(read_documents([path], "parquet", text_column="id"))
    texts = ["좋다.".encode(), "둘째.".encode(), "싫다.".encode("cp949")]
    path = _write_parquet(tmp_path / "b.parquet", texts, row_group_size=2, text_type=pa.binary())
    with pytest.raises(CorpusFormatError, match=r"b.parquet:row 3: column 'text' is not valid UTF-8"):
        list(read_documents([path], "parquet"))
    counts = Counter()
    assert _blocks(read_documents([path], "parquet", "skip", counts)) == [["좋다."], ["둘째."]]
    assert counts["skipped_undecodable_rows"] == 1
    not_parquet = tmp_path / "n.parquet"
    not_parquet.write_text("text\n", encoding="utf-8")
    with pytest.raises(CorpusFormatError, match=r"n.parquet: not a Parquet file"):
        list(read_documents([not_parquet], "parquet"))


# --- datasets (save_to_disk) ---------------------------------------------------------------------


def test_saved_dataset_reads_shards_in_order_a_batch_at_a_time(tmp_path, monkeypatch):
    shards = [
        [{"id": 0, "text": "첫 문서."}, {"id": 1, "text": ""}, {"id": 2, "text": "셋째 문서.\n둘째 문단."}],
        [{"id": 3, "text": "넷째."}, {"id": 4, "text": None}, {"id": 5, "text": "여섯째."}],
    ]
    directory = _save_dataset(tmp_path / "ds", shards, batch_rows=2)
    batches = []
    real_open_stream = pa.ipc.open_stream

    class SpyStream:
        def __init__(self, stream):
            self.stream, self.schema = stream, stream.schema

        def read_next_batch(self):
            batch = self.stream.read_next_batch()
            batches.append(batch.num_rows)
            return batch

    monkeypatch.setattr(pyarrow.ipc, "open_stream", lambda source: SpyStream(real_open_stream(source)))
    files = list_corpus_files(directory)  # data-*.arrow, dataset_info.json, state.json: one dataset
    assert len(files) == 4
    counts = Counter()
    docs = read_documents(files, "datasets", counts=counts)
    assert next(docs).blocks == ["첫 문서."] and batches == [2]
    rest = list(docs)
    assert _blocks(rest) == [["셋째 문서.", "둘째 문단."], ["넷째."], ["여섯째."]]
    assert rest[-1].source == f"{directory / 'data-00001-of-00002.arrow'}:row 3 (dataset index 5)"
    assert batches == [2, 1, 2, 1]
    assert counts == {"empty_documents": 1, "null_texts": 1}


def test_saved_dataset_bad_input(tmp_path):
    directory = _save_dataset(tmp_path / "ds", [[{"id": 0, "text": "좋다."}]])
    with pytest.raises(CorpusFormatError, match=r"data-00000-of-00001.arrow: no column 'content'.*\['id', 'text'\]"):
        list(read_documents(list_corpus_files(directory), "datasets", text_column="content"))
    with pytest.raises(CorpusFormatError, match=r"column 'id' holds int64, not text"):
        list(read_documents(list_corpus_files(directory), "datasets", text_column="id"))
    schema = pa.schema([("id", pa.int64()), ("text", pa.binary())])
    rows = [{"id": i, "text": t} for i, t in enumerate(["가.".encode(), "나.".encode(), "다.".encode("cp949")])]
    directory = _save_dataset(tmp_path / "bin", [rows[:1], rows[1:]], schema=schema)
    with pytest.raises(
        CorpusFormatError, match=r"data-00001-of-00002.arrow:row 2 \(dataset index 2\): .*not valid UTF-8"
    ):
        list(read_documents(list_corpus_files(directory), "datasets"))
    (directory / "data-00001-of-00002.arrow").unlink()
    with pytest.raises(CorpusFormatError, match=r"state.json: lists data-00001-of-00002.arrow, which is missing"):
        list(read_documents(list_corpus_files(directory), "datasets"))
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "a.txt").write_text("글.\n", encoding="utf-8")
    with pytest.raises(CorpusFormatError, match=r"no state.json; .*save_to_disk"):
        list(read_documents(list_corpus_files(plain), "datasets"))


def test_dataset_dict_needs_a_split_or_pattern(tmp_path):
    root = tmp_path / "dd"
    _save_dataset(root / "train", [[{"id": 0, "text": "학습."}]])
    _save_dataset(root / "test", [[{"id": 1, "text": "평가."}]])
    (root / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "test"]}), encoding="utf-8")
    with pytest.raises(CorpusFormatError, match=r"DatasetDict \(splits \['train', 'test'\]\).*data.root.*'\*/\*'"):
        list(read_documents(list_corpus_files(root), "datasets"))
    assert _blocks(read_documents(list_corpus_files(root / "train"), "datasets")) == [["학습."]]
    # '*/*' lists every split's files; splits come in sorted directory order.
    assert _blocks(read_documents(list_corpus_files(root, "*/*"), "datasets")) == [["평가."], ["학습."]]


# --- namuwiki ------------------------------------------------------------------------------------

NAMUWIKI = """ = 388 =

 = = 자연수 = =

387보다 크고 389보다 작은 자연수.
약수는 1, 2, 4, 97, 194, 388로 총 6개이다.

 = = 교통 = =

김포 버스 388
일본 국도 388

 = 빈 문서 =

 = = 개요 = =

 = 한현수 사건 =

 = = 개요 = =

인천에서 우유 배달업을 하던 한 씨.

 = = = 경찰의 주장 = = =

한 씨는 무죄이다. A = B 이다.
"""


def test_namuwiki_titles_split_documents_and_headers_do_not(tmp_path):
    path = tmp_path / "namuwikitext_20200302.dev"
    path.write_text(NAMUWIKI, encoding="utf-8")
    counts = Counter()
    docs = list(read_documents([path], "namuwiki", counts=counts))
    assert _blocks(docs) == [
        [
            "387보다 크고 389보다 작은 자연수.",
            "약수는 1, 2, 4, 97, 194, 388로 총 6개이다.",
            "김포 버스 388",
            "일본 국도 388",
        ],
        ["인천에서 우유 배달업을 하던 한 씨.", "한 씨는 무죄이다. A = B 이다."],
    ]
    assert [d.source for d in docs] == [f"{path}:1", f"{path}:17"]
    assert counts == {"empty_documents": 1, "namuwiki_section_headers": 5}


def test_namuwiki_streams_and_reports_bad_input(tmp_path):
    path = tmp_path / "namuwikitext_20200302.train"
    path.write_text("".join(f" = 문서 {i} =\n\n본문 {i}.\n\n" for i in range(1000)), encoding="utf-8")
    documents = read_namuwiki(path)
    assert next(documents).blocks == ["본문 0."]
    assert sum(1 for _ in documents) == 999
    path.write_text("제목 없는 글.\n = 제목 =\n", encoding="utf-8")
    with pytest.raises(CorpusFormatError, match=r"namuwikitext_20200302.train:1: text before the first title"):
        list(read_namuwiki(path))
    path.write_bytes(" = 제목 =\n".encode() + "본문.\n".encode("cp949"))
    with pytest.raises(CorpusFormatError, match=r"namuwikitext_20200302.train:2: not valid UTF-8"):
        list(read_namuwiki(path))


# --- registry and configs ------------------------------------------------------------------------


def test_unknown_source_lists_every_format():
    with pytest.raises(ValueError, match=r"data.source='xml'.*'datasets'.*'jsonl'.*'namuwiki'.*'parquet'.*'tsv'"):
        list(read_documents([REPO_ROOT / "README.md"], "xml"))


CONFIGS = {"jsonl": "jsonl", "csv": "csv", "parquet": "parquet", "hf_datasets": "datasets", "namuwiki": "namuwiki"}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_format_configs_name_a_known_source(name):
    cfg = OmegaConf.load(REPO_ROOT / "conf" / "data" / f"{name}.yaml")
    assert cfg.source == CONFIGS[name] and cfg.split_sentences is True
    assert OmegaConf.is_missing(cfg, "root")


@pytest.mark.skipif(
    not {"text_field", "text_column"}
    <= DataSchema.__dataclass_fields__.keys() & PrepareSettings.__dataclass_fields__.keys(),
    reason="DataSchema and PrepareSettings have no text_field/text_column yet",
)
def test_jsonl_config_prepares_through_the_pipeline(tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from bert_lm.config.hydra_setup import setup_hydra
    from bert_lm.corpus.prepare import load_stats
    from bert_lm.training.corpus_pipeline import ensure_prepared_corpus

    corpus = tmp_path / "corpus.jsonl"
    _write_jsonl(corpus, [{"body": f"{i}번째 글입니다. 좋아요!"} for i in range(30)])
    setup_hydra()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
            cfg = compose(config_name="config", overrides=["data=jsonl", f"data.root={corpus}", "data.text_field=body"])
    finally:
        GlobalHydra.instance().clear()
    stats = load_stats(ensure_prepared_corpus(cfg.data, tmp_path / "cache", show_progress=False))
    assert sum(stats["documents"].values()) == 30 and sum(stats["sentences"].values()) == 60


def test_a_file_named_for_another_format_is_refused_naming_the_setting(tmp_path):
    """Read as plain text, JSON lines would be pretrained on as JSON syntax; in a directory of jsonl
    files, a README beside the corpus would fail on its first line without saying why."""
    corpus = tmp_path / "corpus.jsonl"
    _write_jsonl(corpus, [{"text": "첫 글입니다."}, {"text": "둘째 글입니다."}])
    with pytest.raises(CorpusFormatError, match=rf"{corpus}: the file's name says jsonl, but data.source=plain"):
        list(read_documents([corpus], "plain"))
    directory = tmp_path / "mixed"
    directory.mkdir()
    _write_jsonl(directory / "a.JSONL", [{"text": "첫 글입니다."}])
    (directory / "README").write_text("# 말뭉치 설명\n", encoding="utf-8")
    # The suggested pattern is spelled as the files are (globs are case-sensitive), and it works.
    with pytest.raises(CorpusFormatError, match=r"README: not a jsonl file .*data\.file_pattern='\*\.JSONL'"):
        list(read_documents(list_corpus_files(directory), "jsonl"))
    assert _blocks(read_documents(list_corpus_files(directory, "*.JSONL"), "jsonl")) == [["첫 글입니다."]]
    # Setups that read right stay allowed: JSON lines named .json beside .jsonl, a tab-separated file
    # named .csv read as tsv, a headerless comment file named .csv read one comment a line, and the
    # petitions archive's own JSON lines.
    _write_jsonl(directory / "b.json", [{"text": "셋째 글입니다."}])
    # Not '*.JSONL' alone, which would leave b.json out.
    with pytest.raises(CorpusFormatError, match=r"data\.file_pattern \(the corpus files here end in \.JSONL, \.json\)"):
        list(read_documents(list_corpus_files(directory), "jsonl"))
    (directory / "a.JSONL").rename(directory / "a.jsonl")
    with pytest.raises(CorpusFormatError, match=r"data\.file_pattern='\*\.json\*'"):
        list(read_documents(list_corpus_files(directory), "jsonl"))
    (directory / "README").unlink()
    assert len(list(read_documents(list_corpus_files(directory), "jsonl"))) == 2
    tab_separated = tmp_path / "ratings.csv"
    tab_separated.write_text("text\tlabel\n좋은 영화였다.\t1\n", encoding="utf-8")
    assert _blocks(read_documents([tab_separated], "tsv")) == [["좋은 영화였다."]]
    comments = tmp_path / "comments.csv"
    comments.write_text("첫 댓글입니다\n둘째 댓글입니다\n", encoding="utf-8")
    assert len(list(read_documents([comments], "lines"))) == 2
    petitions = tmp_path / "petitions.jsonl"
    _write_jsonl(petitions, [{"content": "청원 내용입니다.", "title": "제목"}])
    assert len(list(read_documents([petitions], "petitions"))) == 1

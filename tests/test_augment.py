"""Fill-mask augmentation: the library function and the command, on a tiny export of our
Mecab-aware model and on a published-layout BERT checkpoint written by transformers."""

import csv
import json
import math
import re

import pytest
import torch

from bert_lm.fill_mask import load_for_fill_mask
from bert_lm.models.bert import BertConfig, BertForPreTraining
from bert_lm.models.hf_interop import export_hf
from finetune.augment import _units, _Vocabulary, augment_rows, main
from tests.published_layouts import make_bert_checkpoint, make_electra_checkpoints

TEXTS = [
    "국가의 미래를 위하여 모두가 힘을 모았다.",
    "이순신 장군은  조선의 바다를 지켰다!!",
    "연락은 [EMAIL] 또는 [PHONE]로 주시고 주민번호 [RRN]는 지웠습니다.",
    "이 영화는 정말 재미있었어요 ㅋㅋ",
]
SPECIAL_STRINGS = ("[MASK]", "[CLS]", "[SEP]", "[UNK]", "[PAD]", "[EOD]")
PLACEHOLDERS = ("[EMAIL]", "[PHONE]", "[RRN]")


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory, mecab_tokenizer):
    torch.manual_seed(0)
    model = BertForPreTraining(
        BertConfig(
            vocab_size=mecab_tokenizer.vocab_size,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
        )
    )
    tokenizer_dir = mecab_tokenizer.save(tmp_path_factory.mktemp("tok"))
    return export_hf(model.eval(), tmp_path_factory.mktemp("export"), tokenizer_dir)


@pytest.fixture(scope="module")
def published_dir(tmp_path_factory):
    torch.manual_seed(0)
    return make_bert_checkpoint(tmp_path_factory.mktemp("klue-bert"), extra_texts=TEXTS)


@pytest.fixture(scope="module")
def loaded(export_dir):
    return load_for_fill_mask(export_dir)


def _hate_speech_tsv(path, texts=TEXTS):
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(["comments", "contain_gender_bias", "bias", "hate"])
        for i, text in enumerate(texts):
            writer.writerow([text, str(i % 2 == 0), ["none", "gender", "others"][i % 3], ["hate", "none"][i % 2]])
    return path


def _read_tsv(path):
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def _outside(text, spans):
    """The pieces of ``text`` between the changed spans."""
    starts, ends = [0] + [end for _, end in spans], [start for start, _ in spans] + [len(text)]
    return [text[a:b] for a, b in zip(starts, ends, strict=True)]


def _source_pattern(variant, action):
    """The source must be the variant's text outside its changed spans, with (for substitute)
    one whitespace-free unit where each span was."""
    pieces, position = [], 0
    for start, end in variant.changed_spans:
        pieces.append(re.escape(variant.text[position:start]))
        position = end
    pieces.append(re.escape(variant.text[position:]))
    return re.compile(("(\\S+?)" if action == "substitute" else "").join(pieces), re.DOTALL)


@pytest.mark.parametrize("action", ["substitute", "insert"])
def test_variants_keep_spacing_budget_and_placeholders(loaded, action):
    model, tokenizer = loaded
    mask_prob = 0.3
    results = augment_rows(model, tokenizer, TEXTS, n=6, mask_prob=mask_prob, top_k=10, action=action, seed=1)
    assert len(results) == len(TEXTS) and all(results)
    for text, variants in zip(TEXTS, results, strict=True):
        encoding = tokenizer.encode(text)
        units = _units(tokenizer, text, encoding.ids, encoding.offsets, tokenizer.continuation_mask())
        assert len({v.text for v in variants}) == len(variants) <= 6
        for variant in variants:
            assert variant.text != text
            assert 1 <= len(variant.changed_spans) <= math.ceil(mask_prob * len(units))
            assert not any(s in variant.text for s in SPECIAL_STRINGS)
            assert [variant.text.count(p) for p in PLACEHOLDERS] == [text.count(p) for p in PLACEHOLDERS]
            match = _source_pattern(variant, action).fullmatch(text)
            assert match, (text, variant)
            for (start, end), old in zip(variant.changed_spans, match.groups(), strict=False):
                new = variant.text[start:end]
                assert any(c.isalnum() for c in new) and "#" not in new
                if action == "substitute":
                    assert new != old
                # No changed span touches a placeholder.
                for placeholder in PLACEHOLDERS:
                    for found in re.finditer(re.escape(placeholder), variant.text):
                        assert end <= found.start() or found.end() <= start
            if action == "insert":
                assert len(variant.text) > len(text)


def test_deterministic_per_seed(loaded):
    model, tokenizer = loaded
    first = augment_rows(model, tokenizer, TEXTS, n=3, seed=7, progress=False)
    again = augment_rows(model, tokenizer, TEXTS, n=3, seed=7, batch_size=32, progress=False)
    other = augment_rows(model, tokenizer, TEXTS, n=3, seed=8, progress=False)
    assert first == again and first != other


def test_sparse_head_matches_full_mlm_logits(loaded):
    model, tokenizer = loaded
    ids = torch.tensor([[tokenizer.cls_id, *tokenizer.encode(TEXTS[0]).ids[:5], tokenizer.mask_id, tokenizer.sep_id]])
    types, attention = torch.zeros_like(ids), torch.ones_like(ids)
    with torch.no_grad():
        full, _ = model.full_mlm_logits(ids, types, attention)
        hidden, _ = model.bert(ids, types, attention)
        sparse = model.cls.predictions(hidden[torch.tensor([0]), torch.tensor([6])])
    torch.testing.assert_close(sparse, full[:, 6])


def test_command_keeps_labels_columns_and_provenance(export_dir, tmp_path):
    source = _hate_speech_tsv(tmp_path / "train.tsv")
    output = tmp_path / "aug.tsv"
    argv = [str(export_dir), "--input", str(source), "--output", str(output), "--task", "hate_speech"]
    assert main([*argv, "--n", "2", "--seed", "0", "--no-progress"]) == 0
    source_rows, rows = _read_tsv(source), _read_tsv(output)
    assert rows and list(rows[0]) == [*source_rows[0], "aug_source_row", "aug_changed_spans"]
    assert [int(r["aug_source_row"]) for r in rows] == sorted(int(r["aug_source_row"]) for r in rows)
    for row in rows:
        origin = source_rows[int(row["aug_source_row"]) - 1]
        assert {k: row[k] for k in ("contain_gender_bias", "bias", "hate")} == {
            k: origin[k] for k in ("contain_gender_bias", "bias", "hate")
        }
        assert row["comments"] != origin["comments"]
        spans = json.loads(row["aug_changed_spans"])
        assert spans and all(0 <= s < e <= len(row["comments"]) for s, e in spans)
    assert sum(r["aug_source_row"] == "1" for r in rows) <= 2
    # Same seed, same bytes; another seed, another file.
    again, other = tmp_path / "again.tsv", tmp_path / "other.tsv"
    assert main([*argv[:4], str(again), *argv[5:], "--seed", "0", "--no-progress"]) == 0
    assert main([*argv[:4], str(other), *argv[5:], "--seed", "1", "--no-progress"]) == 0
    assert again.read_bytes() == output.read_bytes() != other.read_bytes()


def test_insert_action_adds_text(export_dir, tmp_path):
    source = _hate_speech_tsv(tmp_path / "train.tsv")
    output = tmp_path / "aug.tsv"
    argv = [str(export_dir), "--input", str(source), "--output", str(output), "--task", "hate_speech"]
    assert main([*argv, "--action", "insert", "--no-progress"]) == 0
    source_rows = _read_tsv(source)
    for row in _read_tsv(output):
        origin = source_rows[int(row["aug_source_row"]) - 1]["comments"]
        text, spans = row["comments"], json.loads(row["aug_changed_spans"])
        assert len(text) > len(origin)
        assert "".join(_outside(text, spans)) == origin


def test_klue_nli_changes_only_the_hypothesis(export_dir, tmp_path):
    items = [
        {"guid": f"klue-nli-{i}", "premise": TEXTS[i], "hypothesis": TEXTS[(i + 1) % 4], "gold_label": label}
        for i, label in enumerate(["entailment", "neutral", "contradiction", "neutral"])
    ]
    source, output = tmp_path / "klue-nli-train.json", tmp_path / "aug.json"
    source.write_text(json.dumps(items, ensure_ascii=False, indent=2), encoding="utf-8")
    assert main([str(export_dir), "--input", str(source), "--output", str(output), "--task", "klue_nli"]) == 0
    rows = json.loads(output.read_text(encoding="utf-8"))
    assert rows
    for row in rows:
        origin = items[row["aug_source_row"] - 1]
        assert row["premise"] == origin["premise"] and row["gold_label"] == origin["gold_label"]
        assert row["guid"] == origin["guid"] and row["hypothesis"] != origin["hypothesis"]
        assert isinstance(row["aug_changed_spans"], list)


def test_published_checkpoint_with_text_column_jsonl(published_dir, tmp_path):
    source, output = tmp_path / "train.jsonl", tmp_path / "aug.jsonl"
    source.write_text(
        "".join(json.dumps({"text": t, "label": i}, ensure_ascii=False) + "\n" for i, t in enumerate(TEXTS)),
        encoding="utf-8",
    )
    argv = [str(published_dir), "--input", str(source), "--output", str(output), "--text-column", "text"]
    assert main([*argv, "--n", "3", "--mask-prob", "0.3", "--no-progress"]) == 0
    rows = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert rows
    for row in rows:
        origin = TEXTS[row["aug_source_row"] - 1]
        assert row["label"] == row["aug_source_row"] - 1
        assert not any(s in row["text"] for s in SPECIAL_STRINGS) and "##" not in row["text"]
        assert [row["text"].count(p) for p in PLACEHOLDERS] == [origin.count(p) for p in PLACEHOLDERS]
        # Whole words: the text outside the spans is the source's, word boundaries included.
        outside = _outside(row["text"], row["aug_changed_spans"])
        assert re.fullmatch("(\\S+?)".join(map(re.escape, outside)), origin)


def test_discriminator_is_refused(tmp_path, capsys):
    discriminator, _ = make_electra_checkpoints(tmp_path / "koelectra", extra_texts=TEXTS)
    source = _hate_speech_tsv(tmp_path / "train.tsv")
    argv = [str(discriminator), "--input", str(source), "--output", str(tmp_path / "aug.tsv"), "--task", "hate_speech"]
    assert main(argv) == 1
    assert "no masked-LM head" in capsys.readouterr().err


def test_missing_column_names_file_and_line(export_dir, tmp_path, capsys):
    source = tmp_path / "train.tsv"
    source.write_text("comments\tbias\n좋은 글입니다\tnone\n", encoding="utf-8")
    argv = [str(export_dir), "--input", str(source), "--output", str(tmp_path / "aug.tsv"), "--task", "hate_speech"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and f"{source}:1:" in err and "contain_gender_bias" in err


def test_malformed_json_line_names_file_and_line(export_dir, tmp_path, capsys):
    source = tmp_path / "train.jsonl"
    source.write_text('{"text": "좋은 글", "label": 1}\n\n{"text": "나쁜 글", "label": \n', encoding="utf-8")
    argv = [str(export_dir), "--input", str(source), "--output", str(tmp_path / "aug.jsonl"), "--text-column", "text"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"{source}:3:" in err and "malformed JSON" in err


@pytest.mark.parametrize(
    ("content", "line", "message"),
    [
        ("id\tdocument\tlabel\n1\t좋아요\t1\n2\t \t0\n", 3, "empty text"),
        ("id\tdocument\tlabel\n1\t좋아요\t1\t덤\n", 2, "4 fields"),
    ],
)
def test_bad_rows_name_the_line(export_dir, tmp_path, capsys, content, line, message):
    source = tmp_path / "ratings_train.txt"
    source.write_text(content, encoding="utf-8")
    argv = [str(export_dir), "--input", str(source), "--output", str(tmp_path / "aug.tsv"), "--task", "nsmc"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"{source}:{line}:" in err and message in err


def test_refuses_to_overwrite_the_input(export_dir, tmp_path, capsys):
    source = _hate_speech_tsv(tmp_path / "train.tsv")
    before = source.read_bytes()
    assert main([str(export_dir), "--input", str(source), "--output", str(source), "--task", "hate_speech"]) == 1
    assert "refusing to overwrite" in capsys.readouterr().err and source.read_bytes() == before


@pytest.mark.parametrize("action", ["substitute", "insert"])
def test_text_longer_than_the_model_changes_in_its_first_window(published_dir, action):
    model, tokenizer = load_for_fill_mask(published_dir)
    long_text = " ".join(TEXTS * 10)
    encoding = tokenizer.encode(long_text)
    assert len(encoding.ids) > model.config.max_sequence_length
    window_end = encoding.offsets[model.config.max_sequence_length - 3][1]
    (variants,) = augment_rows(model, tokenizer, [long_text], n=3, action=action, seed=0, progress=False)
    assert variants
    for variant in variants:
        assert variant.text.endswith(long_text[window_end:])


def test_punctuation_pieces_are_never_sampled(loaded):
    # The sample corpus has hashtags, so "#" (and its continuation "###") are pieces of the vocabulary
    # whatever order the (non-deterministic, tokenizers#1794) WordPiece trainer put them in.
    _, tokenizer = loaded
    vocabulary = _Vocabulary(tokenizer, tokenizer.vocab_size)
    hash_ids = [i for i in range(tokenizer.vocab_size) if tokenizer.id_to_token(i) in ("#", "###")]
    assert hash_ids
    assert not vocabulary.allowed[:, hash_ids].any()
    allowed_texts = [vocabulary.texts[i] for i in vocabulary.allowed.any(0).nonzero().flatten().tolist()]
    assert allowed_texts and all(any(c.isalnum() for c in t) for t in allowed_texts)


def test_punctuation_is_never_the_unit_changed(loaded):
    model, tokenizer = loaded
    text = '"그래서" 뭐, 어쩌라고?! (국가의 미래를)'
    (variants,) = augment_rows(model, tokenizer, [text], n=8, mask_prob=0.5, top_k=10, seed=3, progress=False)
    assert variants
    for variant in variants:
        match = _source_pattern(variant, "substitute").fullmatch(text)
        assert match, variant
        for old in match.groups():
            assert any(c.isalnum() for c in old), (old, variant)

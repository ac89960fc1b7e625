"""The bad-input matrix of the README: one test per row. Each bad input gives an
error that names the file, line or key and says what to do, and nothing already
written is lost."""

import pytest
import torch

from bert_lm.config.hydra_setup import check_overrides
from bert_lm.corpus.readers import CorpusFormatError
from bert_lm.models.bert import BertConfig, BertForPreTraining
from bert_lm.models.hf_interop import export_hf
from bert_lm.training.pretraining_run import ConfigError, pretrain
from finetune.ner.klue_ner import KlueFormatError, read_klue_ner
from tests.test_run_pretraining import compose_config, tiny_overrides


def run_with(tmp_path, *extra):
    overrides = tiny_overrides(tmp_path, *extra)
    return pretrain(compose_config(overrides), overrides)


@pytest.fixture
def earlier_output(tmp_path):
    """A file from an earlier run in the cache, which a failing run must leave alone."""
    marker = tmp_path / "cache" / "earlier.txt"
    marker.parent.mkdir(parents=True)
    marker.write_text("keep me")
    return marker


def test_config_typo(capsys):
    with pytest.raises(SystemExit):
        check_overrides(["data.mask_ration=0.2"])
    err = capsys.readouterr().err
    assert "unknown config key 'data.mask_ration'. Did you mean 'mask_ratio'?" in err
    with pytest.raises(SystemExit):
        check_overrides(["seeed=1"])
    err = capsys.readouterr().err
    assert "unknown config key 'seeed'. Did you mean 'seed'?" in err and "ckpt_path" in err


def test_wrong_value_type(capsys):
    with pytest.raises(SystemExit):
        check_overrides(["train.warmup_ratio=lots"])
    assert "config key 'train.warmup_ratio' expects a float, got 'lots'" in capsys.readouterr().err


def test_missing_corpus(tmp_path, earlier_output):
    with pytest.raises(FileNotFoundError, match=r"corpus path .*nowhere does not exist: set data.root"):
        run_with(tmp_path, f"data.root={tmp_path / 'nowhere'}")
    assert earlier_output.read_text() == "keep me"


def test_empty_corpus(tmp_path, earlier_output):
    corpus = tmp_path / "empty.txt"
    corpus.write_text("\n\n", encoding="utf-8")
    with pytest.raises(CorpusFormatError, match=r"empty.txt: the file holds no text"):
        run_with(tmp_path, f"data.root={corpus}")
    assert earlier_output.read_text() == "keep me"
    assert not list((tmp_path / "cache" / "prepared").glob("*/train.txt")), "no half-prepared corpus left"


def test_non_utf8_bytes(tmp_path):
    corpus = tmp_path / "legacy.txt"
    corpus.write_bytes("첫 문장입니다.\n".encode() + "둘째 문장입니다.\n".encode("euc-kr"))
    with pytest.raises(CorpusFormatError, match=r"legacy.txt:2: not valid UTF-8.*iconv.*on_decode_error=skip"):
        run_with(tmp_path, f"data.root={corpus}")


def test_malformed_klue_line(tmp_path):
    path = tmp_path / "bad.tsv"
    path.write_text("## klue-ner-x\t<김:PS>\n김\tB-PS\tEXTRA\n\n", encoding="utf-8")
    with pytest.raises(KlueFormatError, match=r"bad.tsv:2"):
        read_klue_ner(path)


def test_checkpoint_and_tokenizer_with_different_vocabularies(tmp_path, mecab_tokenizer):
    other = BertForPreTraining(BertConfig(vocab_size=123, hidden_size=64, num_hidden_layers=2,
                                          num_attention_heads=2, intermediate_size=128))
    hf_dir = export_hf(other, tmp_path / "other_bert", mecab_tokenizer.save(tmp_path / "tokenizer"))
    with pytest.raises(ValueError, match=r"123.*\d+|\d+.*123"):
        run_with(tmp_path, f"init_from={hf_dir}")
    assert not (tmp_path / "run" / "checkpoints").exists(), "failed before training"


def test_checkpoint_without_a_tokenizer_asks_for_one(tmp_path):
    other = BertForPreTraining(BertConfig(vocab_size=123, hidden_size=64, num_hidden_layers=2,
                                          num_attention_heads=2, intermediate_size=128))
    hf_dir = export_hf(other, tmp_path / "other_bert")
    with pytest.raises(ConfigError, match="holds no tokenizer.*tokenizer.dir"):
        run_with(tmp_path, f"init_from={hf_dir}")


def test_max_len_above_position_table(tmp_path):
    with pytest.raises(ConfigError, match=r"data.max_len=256 is above the 128 positions .*max_position_embeddings=128"):
        run_with(tmp_path, "data.max_len=256")
    assert not (tmp_path / "cache").exists(), "no data work before the check"


def test_both_objectives_off(tmp_path):
    with pytest.raises(ConfigError, match="train.train_mlm=false and train.train_nsp=false"):
        run_with(tmp_path, "train.train_mlm=false", "train.train_nsp=false")
    assert not (tmp_path / "cache").exists()


class NotAllowed:
    """Stands for any object a malicious checkpoint could make torch.load build."""


def test_outside_checkpoints_load_weights_only(tmp_path):
    # A checkpoint that needs arbitrary unpickling is refused, not executed.
    path = tmp_path / "evil.bin"
    torch.save({"bert.embeddings.word_embeddings.weight": torch.zeros(2, 2), "x": NotAllowed()}, path)
    (tmp_path / "config.json").write_text("{}")
    from bert_lm.models.hf_interop import read_hf_state_dict

    path.rename(tmp_path / "pytorch_model.bin")
    with pytest.raises(Exception, match="(?i)weights_only|unsupported|global"):
        read_hf_state_dict(tmp_path)


def test_init_from_a_path_that_does_not_exist_says_so(tmp_path):
    with pytest.raises(ConfigError, match=r"init_from: .*nowhere does not exist: pass an HF model directory"):
        run_with(tmp_path, f"init_from={tmp_path / 'nowhere'}")

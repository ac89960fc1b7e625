"""Tiny checkpoints in the on-disk layouts of the published Korean encoders.

Each helper writes a directory the way its model is published on the Hub, with
random weights and tiny sizes (hidden 32, 2 layers, 2 heads, intermediate 64),
using transformers itself for the model files so that the layouts are the real
ones and not our idea of them:

* ``make_bert_checkpoint``: klue/bert-base, kcbert -- ``BertForPreTraining``,
  ``vocab.txt`` (``[PAD] [UNK] [CLS] [SEP] [MASK]`` first) and a
  ``tokenizer_config.json`` naming ``BertTokenizer``.
* ``make_roberta_checkpoint``: klue/roberta -- ``RobertaForMaskedLM`` whose
  tokenizer is still a ``BertTokenizer`` over a WordPiece ``vocab.txt`` ordered
  ``[CLS] [PAD] [SEP] [UNK] [MASK]``, so pad is id 1 (bos 0, eos 2) as RoBERTa's
  position ids expect.
* ``make_electra_checkpoints``: KoELECTRA -- discriminator and generator
  directories, ``embedding_size`` below ``hidden_size``, and a
  ``tokenizer_config.json`` without ``tokenizer_class`` (the class comes from
  ``config.json``'s ``model_type``).
* ``make_sentencepiece_checkpoint``: a RoBERTa whose tokenizer is a
  ``tokenizer.json`` (Unigram or BPE with a Metaspace ``▁`` pre-tokenizer) and
  ``tokenizer_class: PreTrainedTokenizerFast``.

The vocabulary is built here from a few Korean sentences (every syllable as a
word start and as a ``##`` piece, plus some whole words), so the helpers need no
download and run in well under a second each.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

SENTENCES = (
    "국가의 미래를 위하여 모두가 힘을 모았다.",
    "이순신 장군은 조선의 바다를 지켰다.",
    "서울은 대한민국의 수도이다.",
    "오늘 서울의 날씨는 맑고 따뜻합니다.",
    "정부는 국민의 안전을 최우선으로 생각한다.",
    "우리나라의 미래는 청년들에게 달려 있다.",
    "부산에서 열린 영화제에 많은 사람이 모였다.",
    "김재원 선수가 경기에서 두 골을 넣었다!",
    "학생들은 도서관에서 책을 읽고 있었다.",
    "내일 오후 3시에 회의가 있습니다.",
    "한국어 형태소 분석은 생각보다 어렵다.",
    "그는 2024년에 새로운 회사를 세웠다.",
    "시민들이 광장에 모여 목소리를 높였다.",
    "이 영화는 정말 재미있었어요 ㅋㅋ",
    "대통령은 국회에서 연설을 했다.",
    "경제 성장률이 지난해보다 높아졌다.",
    "아이들이 공원에서 즐겁게 뛰어놀았다.",
    "제주도의 바다는 언제나 아름답다.",
    "병원에 가려면 버스를 두 번 갈아타야 한다.",
    "새 법안이 국민 청원을 통해 발의되었다.",
    "할머니께서 맛있는 김치를 담가 주셨다.",
    "연구진은 새로운 치료법을 발표했다.",
    "우리 팀이 결승전에서 승리했다.",
    "한강 공원에서 자전거를 탔다.",
)
WHOLE_WORDS = ("국가", "미래", "이순신", "서울", "대한민국", "정부", "국민", "우리나라", "도서관", "대통령")
PUNCTUATION = tuple(".,!?'\"()-:%~")
DIGITS_AND_LATIN = tuple("0123456789") + tuple("abcdefghijklmnopqrstuvwxyz")

BERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")  # klue/bert-base, kcbert, KoELECTRA
KLUE_ROBERTA_SPECIALS = ("[CLS]", "[PAD]", "[SEP]", "[UNK]", "[MASK]")  # klue/roberta: bos 0, pad 1, eos 2
SENTENCEPIECE_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")  # fairseq order: pad 1

TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
MAX_TOKENS = 64


def korean_wordpiece_vocab(specials: Iterable[str] = BERT_SPECIALS, extra_texts: Iterable[str] = ()) -> list[str]:
    """Specials, then whole words, then every character seen as a word start and as ``##``."""
    characters = sorted({c for text in (*SENTENCES, *extra_texts) for c in text if not c.isspace()})
    characters += [c for c in (*PUNCTUATION, *DIGITS_AND_LATIN) if c not in characters]
    vocab = list(dict.fromkeys([*specials, *WHOLE_WORDS, *characters, *("##" + c for c in characters)]))
    return vocab


def _write_vocab(directory: Path, vocab: list[str]) -> None:
    (directory / "vocab.txt").write_text("".join(token + "\n" for token in vocab), encoding="utf-8")


def _write_json(path: Path, content: dict) -> None:
    path.write_text(json.dumps(content, ensure_ascii=False, indent=2), encoding="utf-8")


def make_bert_checkpoint(directory: str | Path, do_lower_case: bool = False, extra_texts: Iterable[str] = ()) -> Path:
    """klue/bert-base layout: BertForPreTraining + vocab.txt + tokenizer_config.json."""
    from transformers import BertConfig, BertForPreTraining

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vocab = korean_wordpiece_vocab(BERT_SPECIALS, extra_texts)
    config = BertConfig(vocab_size=len(vocab), max_position_embeddings=MAX_TOKENS, **TINY)
    BertForPreTraining(config).save_pretrained(directory)
    _write_vocab(directory, vocab)
    _write_json(
        directory / "tokenizer_config.json",
        {
            "do_lower_case": do_lower_case,
            "do_basic_tokenize": True,
            "never_split": None,
            "unk_token": "[UNK]",
            "sep_token": "[SEP]",
            "pad_token": "[PAD]",
            "cls_token": "[CLS]",
            "mask_token": "[MASK]",
            "tokenize_chinese_chars": True,
            "strip_accents": None,
            "model_max_length": MAX_TOKENS,
            "tokenizer_class": "BertTokenizer",
        },
    )
    return directory


def make_roberta_checkpoint(directory: str | Path, extra_texts: Iterable[str] = ()) -> Path:
    """klue/roberta layout: RobertaForMaskedLM with a WordPiece BertTokenizer, pad id 1."""
    from transformers import RobertaConfig, RobertaForMaskedLM

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vocab = korean_wordpiece_vocab(KLUE_ROBERTA_SPECIALS, extra_texts)
    config = RobertaConfig(
        vocab_size=len(vocab),
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        type_vocab_size=1,
        # RoBERTa numbers real tokens from pad_token_id + 1.
        max_position_embeddings=MAX_TOKENS + 2,
        **TINY,
    )
    RobertaForMaskedLM(config).save_pretrained(directory)
    _write_vocab(directory, vocab)
    _write_json(
        directory / "tokenizer_config.json",
        {
            "do_lower_case": False,
            "do_basic_tokenize": True,
            "never_split": None,
            "bos_token": "[CLS]",
            "eos_token": "[SEP]",
            "unk_token": "[UNK]",
            "sep_token": "[SEP]",
            "cls_token": "[CLS]",
            "pad_token": "[PAD]",
            "mask_token": "[MASK]",
            "tokenize_chinese_chars": True,
            "strip_accents": None,
            "model_max_length": MAX_TOKENS,
            "tokenizer_class": "BertTokenizer",
        },
    )
    return directory


def make_electra_checkpoints(directory: str | Path, extra_texts: Iterable[str] = ()) -> tuple[Path, Path]:
    """KoELECTRA layout: (discriminator_dir, generator_dir), each with vocab.txt."""
    from transformers import ElectraConfig, ElectraForMaskedLM, ElectraForPreTraining

    directory = Path(directory)
    vocab = korean_wordpiece_vocab(BERT_SPECIALS, extra_texts)
    shared = {"vocab_size": len(vocab), "embedding_size": 16, "max_position_embeddings": MAX_TOKENS}
    models = {
        "discriminator": (ElectraForPreTraining, ElectraConfig(**shared, **TINY)),
        # The generator is a fraction of the discriminator's width (1/3 in KoELECTRA; 1/2 here).
        "generator": (
            ElectraForMaskedLM,
            ElectraConfig(**shared, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32),
        ),
    }
    out = []
    for name, (model_class, config) in models.items():
        model_dir = directory / name
        model_dir.mkdir(parents=True, exist_ok=True)
        model_class(config).save_pretrained(model_dir)
        _write_vocab(model_dir, vocab)
        # KoELECTRA ships no tokenizer_class: transformers picks it from config.json.
        _write_json(model_dir / "tokenizer_config.json", {"do_lower_case": False, "model_max_length": MAX_TOKENS})
        out.append(model_dir)
    return out[0], out[1]


def train_metaspace_tokenizer(
    model: str = "unigram", prepend_scheme: str = "always", vocab_size: int = 400, extra_texts: Iterable[str] = ()
):
    """A SentencePiece-style ``tokenizers.Tokenizer`` (``▁`` marks a word start)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    specials = list(SENTENCEPIECE_SPECIALS)
    if model == "unigram":
        tokenizer = Tokenizer(models.Unigram())
        trainer = trainers.UnigramTrainer(
            vocab_size=vocab_size, special_tokens=specials, unk_token="<unk>", show_progress=False
        )
    elif model == "bpe":
        tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False)
    else:
        raise ValueError(f"model must be 'unigram' or 'bpe', got {model!r}")
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=prepend_scheme)
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme=prepend_scheme)
    # Repeated so that the trainers see each piece often enough to keep it.
    tokenizer.train_from_iterator([*SENTENCES, *extra_texts] * 5, trainer=trainer)
    bos, eos = tokenizer.token_to_id("<s>"), tokenizer.token_to_id("</s>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", bos), ("</s>", eos)]
    )
    return tokenizer


def make_sentencepiece_checkpoint(
    directory: str | Path,
    model: str = "unigram",
    prepend_scheme: str = "always",
    extra_texts: Iterable[str] = (),
    vocab_size: int = 400,
) -> Path:
    """RobertaForMaskedLM + tokenizer.json (Metaspace Unigram/BPE) + tokenizer_config.json.

    ``vocab_size`` is the trainer's target; a small corpus may give fewer pieces.
    """
    from transformers import RobertaConfig, RobertaForMaskedLM

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = train_metaspace_tokenizer(model, prepend_scheme, vocab_size, extra_texts)
    tokenizer.save(str(directory / "tokenizer.json"))
    config = RobertaConfig(
        vocab_size=tokenizer.get_vocab_size(),
        pad_token_id=tokenizer.token_to_id("<pad>"),
        bos_token_id=tokenizer.token_to_id("<s>"),
        eos_token_id=tokenizer.token_to_id("</s>"),
        type_vocab_size=1,
        max_position_embeddings=MAX_TOKENS + 2,
        **TINY,
    )
    RobertaForMaskedLM(config).save_pretrained(directory)
    _write_json(
        directory / "tokenizer_config.json",
        {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": "<s>",
            "eos_token": "</s>",
            "cls_token": "<s>",
            "sep_token": "</s>",
            "pad_token": "<pad>",
            "unk_token": "<unk>",
            "mask_token": "<mask>",
            "model_max_length": MAX_TOKENS,
        },
    )
    return directory

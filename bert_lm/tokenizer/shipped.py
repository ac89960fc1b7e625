"""A published checkpoint's own tokenizer behind the pipeline's tokenizer interface.

``ShippedTokenizer`` wraps whatever tokenizer files a checkpoint ships
(``tokenizer.json`` of any model, or ``vocab.txt`` + ``tokenizer_config.json`` as
klue/bert-base, klue/roberta, kcbert and KoELECTRA publish them), loaded through
transformers so that ids match what the checkpoint was trained on, and exposes the
same methods as :class:`bert_lm.tokenizer.korean_tokenizer.KoreanTokenizer`.

Decisions that matter for Korean checkpoints:

* Lowercasing is never a default. ``BertTokenizer`` lowercases unless told not to,
  and lowercasing (with its accent stripping) NFD-decomposes Hangul syllables into
  jamo that no Korean vocabulary holds, so every word becomes ``[UNK]``. We pass
  ``do_lower_case`` as the checkpoint declares it (tokenizer_config.json, else the
  BertNormalizer in tokenizer.json) and ``False`` when it declares nothing.
* Special ids come from the tokenizer by role, never assumed: klue/roberta has
  ``[PAD]`` at id 1, fairseq-style vocabularies name them ``<s> </s> <pad>``.
* Offsets index the original text without whitespace: a Metaspace (``▁``) token's
  span includes the space it replaced, so spans are trimmed, and a bare ``▁``
  token keeps its id with a zero-width span.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from bert_lm.tokenizer.korean_tokenizer import TokenizedText

log = logging.getLogger(__name__)

TOKENIZER_JSON = "tokenizer.json"
VOCAB_TXT = "vocab.txt"
TOKENIZER_CONFIG = "tokenizer_config.json"
MODEL_CONFIG = "config.json"
# Above this share of [UNK] in a sample, the tokenizer almost surely does not fit the text.
UNKNOWN_RATE_LIMIT = 0.01

ROLES = ("cls", "sep", "pad", "mask", "unk")
# transformers attributes that may hold a role, in order: RoBERTa-style configs may name only bos/eos.
ROLE_ATTRIBUTES = {
    "cls": ("cls_token", "bos_token"),
    "sep": ("sep_token", "eos_token"),
    "pad": ("pad_token",),
    "mask": ("mask_token",),
    "unk": ("unk_token",),
}
# What the role's token is called in published vocabularies (BERT style, then fairseq/SentencePiece style).
ROLE_NAMES = {
    "cls": ("[CLS]", "<s>"),
    "sep": ("[SEP]", "</s>"),
    "pad": ("[PAD]", "<pad>"),
    "mask": ("[MASK]", "<mask>"),
    "unk": ("[UNK]", "<unk>"),
}
_BYTE_LEVEL_SPACE = "Ġ"  # GPT-2 style byte-level BPE marks a word start with this


# ----------------------------------------------------------------- reading the files
def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); re-download or fix the file") from error


def _bert_normalizer(tokenizer_json: dict) -> dict | None:
    """The BertNormalizer in a tokenizer.json's normalizer (possibly inside a Sequence)."""
    return next((n for n in _walk(tokenizer_json.get("normalizer")) if n.get("type") == "BertNormalizer"), None)


def _walk(component: dict | None) -> Iterator[dict]:
    """A normalizer/pre-tokenizer/decoder and the members of any Sequence it is."""
    if not component:
        return
    yield component
    for key in ("normalizers", "pretokenizers", "decoders"):
        for member in component.get(key) or ():
            yield from _walk(member)


def declared_case_settings(directory: Path) -> dict:
    """``do_lower_case`` / ``strip_accents`` as the checkpoint declares them, ``do_lower_case=False`` if it does not.

    tokenizer_config.json wins (transformers reads it too); a BertNormalizer in
    tokenizer.json is the checkpoint's own statement when the config is silent.
    """
    config_path = directory / TOKENIZER_CONFIG
    config = _read_json(config_path) if config_path.is_file() else {}
    normalizer = None
    if (directory / TOKENIZER_JSON).is_file():
        normalizer = _bert_normalizer(_read_json(directory / TOKENIZER_JSON))
    settings = {}
    if "do_lower_case" in config:
        settings["do_lower_case"] = bool(config["do_lower_case"])
    elif normalizer is not None:
        settings["do_lower_case"] = bool(normalizer.get("lowercase"))
    else:
        settings["do_lower_case"] = False  # never lowercase Korean unless told to: it breaks Hangul
    if "strip_accents" in config:
        settings["strip_accents"] = config["strip_accents"]
    elif normalizer is not None and "strip_accents" in normalizer:
        settings["strip_accents"] = normalizer["strip_accents"]
    return settings


def _file_tokens(directory: Path) -> set[str] | None:
    """Tokens the checkpoint's files hold, so that a special token transformers invented is noticed."""
    if (directory / TOKENIZER_JSON).is_file():
        content = _read_json(directory / TOKENIZER_JSON)
        vocab = content.get("model", {}).get("vocab", {})
        # WordPiece/BPE: {token: id}; Unigram: [[token, score], ...]
        tokens = set(vocab) if isinstance(vocab, dict) else {entry[0] for entry in vocab}
        return tokens | {added["content"] for added in content.get("added_tokens", [])}
    if (directory / VOCAB_TXT).is_file():
        return set((directory / VOCAB_TXT).read_text(encoding="utf-8").splitlines())
    return None


def _load_hf_tokenizer(directory: Path, case_settings: dict):
    """transformers' fast tokenizer for the directory, local files only."""
    from transformers import AutoTokenizer, BertTokenizer, PreTrainedTokenizerFast

    config_path = directory / TOKENIZER_CONFIG
    config = _read_json(config_path) if config_path.is_file() else {}
    if config.get("auto_map"):
        log.warning(
            "%s names custom tokenizer code (auto_map %s); ShippedTokenizer does not run it and uses %s as it is",
            config_path,
            config["auto_map"],
            TOKENIZER_JSON if (directory / TOKENIZER_JSON).is_file() else VOCAB_TXT,
        )
    try:
        return AutoTokenizer.from_pretrained(str(directory), local_files_only=True, **case_settings)
    except (ValueError, OSError, KeyError) as error:
        # No tokenizer_class and no config.json to infer it from: build it from the files directly.
        log.info("AutoTokenizer could not load %s (%s); building the tokenizer from its files", directory, error)
        named = {attr: config[attr] for attrs in ROLE_ATTRIBUTES.values() for attr in attrs if config.get(attr)}
        if (directory / TOKENIZER_JSON).is_file():
            return PreTrainedTokenizerFast(tokenizer_file=str(directory / TOKENIZER_JSON), **named)
        vocab_tokens = _file_tokens(directory) or set()
        for role, attrs in ROLE_ATTRIBUTES.items():
            # BertTokenizer would append a default name the vocabulary lacks as a new id.
            found = next((name for name in ROLE_NAMES[role] if name in vocab_tokens), None)
            if attrs[0] not in named and found is not None:
                named[attrs[0]] = found
        return BertTokenizer(vocab=str(directory / VOCAB_TXT), **case_settings, **named)


# ----------------------------------------------------------------------- the class
class ShippedTokenizer:
    """A published checkpoint's tokenizer with the pipeline's tokenizer interface."""

    def __init__(self, hf_tokenizer, source: str | os.PathLike | None = None, num_workers: int | None = None):
        self.hf_tokenizer = hf_tokenizer
        self.source = Path(source) if source is not None else None
        # The Rust batch encoder sizes its own thread pool (RAYON_NUM_THREADS); kept for the shared signature.
        self.num_workers = num_workers
        # A copy without truncation or padding: a shipped tokenizer.json may carry them,
        # and corpus tokenization needs whole lines. Also keeps the fingerprint independent of them.
        backend = Tokenizer.from_str(hf_tokenizer.backend_tokenizer.to_str())
        backend.no_truncation()
        backend.no_padding()
        self.backend = backend
        self._spec = json.loads(backend.to_str())
        self._resolve_special_ids()

    @classmethod
    def load(cls, directory: str | os.PathLike, num_workers: int | None = None) -> ShippedTokenizer:
        directory = Path(directory)
        if not ((directory / TOKENIZER_JSON).is_file() or (directory / VOCAB_TXT).is_file()):
            raise FileNotFoundError(
                f"{directory} holds neither {TOKENIZER_JSON} nor {VOCAB_TXT}: point at the checkpoint directory "
                "that ships the tokenizer files"
            )
        hf_tokenizer = _load_hf_tokenizer(directory, declared_case_settings(directory))
        tokenizer = cls(hf_tokenizer, source=directory, num_workers=num_workers)
        tokenizer._check_against_files(directory)
        return tokenizer

    # ------------------------------------------------------------ special tokens
    def _resolve_special_ids(self) -> None:
        ids = {}
        for role in ROLES:
            candidates = [getattr(self.hf_tokenizer, attr, None) for attr in ROLE_ATTRIBUTES[role]]
            candidates += ROLE_NAMES[role]
            token_id = next(
                (
                    self.backend.token_to_id(str(c))
                    for c in candidates
                    if c and self.backend.token_to_id(str(c)) is not None
                ),
                None,
            )
            if token_id is None:
                raise ValueError(
                    f"tokenizer from {self.source or 'memory'} has no {role} token: set "
                    f"{ROLE_ATTRIBUTES[role][0]!r} in {TOKENIZER_CONFIG} to a token of the vocabulary "
                    f"(looked for {candidates})"
                )
            ids[role] = token_id
        self.cls_id, self.sep_id, self.pad_id, self.mask_id, self.unk_id = (ids[role] for role in ROLES)
        extra = [i for i in getattr(self.hf_tokenizer, "all_special_ids", []) if i not in ids.values()]
        self.special_ids = sorted({*ids.values(), *extra})

    def _check_against_files(self, directory: Path) -> None:
        """Special tokens must exist in the shipped files and fit the model's embedding table."""
        file_tokens = _file_tokens(directory)
        if file_tokens is not None:
            invented = [self.id_to_token(i) for i in self.special_ids if self.id_to_token(i) not in file_tokens]
            if invented:
                raise ValueError(
                    f"special tokens {invented} are not in {directory}'s tokenizer files: transformers added them "
                    f"with new ids. Name the vocabulary's own special tokens in {directory / TOKENIZER_CONFIG}."
                )
        model_config = directory / MODEL_CONFIG
        if model_config.is_file():
            model_vocab = _read_json(model_config).get("vocab_size")
            if model_vocab is not None and self.vocab_size > model_vocab:
                raise ValueError(
                    f"the tokenizer in {directory} has {self.vocab_size} ids but {model_config} says vocab_size "
                    f"{model_vocab}: ids past it would index outside the embedding table. Fix the tokenizer files "
                    "or the model config so that they belong together."
                )

    # -------------------------------------------------------------- settings
    @property
    def lowercase(self) -> bool:
        normalizers = list(_walk(self._spec.get("normalizer")))
        return any(
            n.get("type") == "Lowercase" or (n.get("type") == "BertNormalizer" and n.get("lowercase"))
            for n in normalizers
        )

    @property
    def strip_accents(self) -> bool:
        for normalizer in _walk(self._spec.get("normalizer")):
            if normalizer.get("type") == "StripAccents":
                return True
            if normalizer.get("type") == "BertNormalizer":
                # BertNormalizer strips accents when lowercasing unless strip_accents says otherwise.
                strip = normalizer.get("strip_accents")
                if strip if strip is not None else normalizer.get("lowercase"):
                    return True
        return False

    def _decomposes_hangul(self) -> bool:
        decomposing = {"NFD", "NFKD"}
        return (
            self.lowercase
            or self.strip_accents
            or any(n.get("type") in decomposing for n in _walk(self._spec.get("normalizer")))
        )

    def _word_start_marker(self) -> str | None:
        """The character a Metaspace or byte-level pre-tokenizer puts at a word start."""
        for component in (*_walk(self._spec.get("pre_tokenizer")), *_walk(self._spec.get("decoder"))):
            if component.get("type") == "Metaspace":
                return component.get("replacement", "▁")
            if component.get("type") == "ByteLevel":
                return _BYTE_LEVEL_SPACE
        return None

    def fingerprint(self) -> str:
        """Content hash of everything that changes the ids this tokenizer produces."""
        digest = hashlib.sha256(self.backend.to_str().encode("utf-8"))
        digest.update(f"lowercase={self.lowercase};strip_accents={self.strip_accents}".encode())
        return digest.hexdigest()

    # ------------------------------------------------------------ vocabulary
    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def id_to_token(self, token_id: int) -> str:
        return self.backend.id_to_token(token_id)

    def continuation_mask(self) -> np.ndarray:
        """(vocab_size,) bool: True for pieces that continue a word (used by whole-word masking).

        ``##x`` with a continuing-subword prefix; with a ``▁``/``Ġ`` word-start
        marker, every piece that lacks the marker and is not special.
        """
        model = self._spec.get("model", {})
        prefix = model.get("continuing_subword_prefix")
        marker = self._word_start_marker()
        if not prefix and marker is None:
            raise ValueError(
                f"cannot tell word-continuing pieces for the {model.get('type')} tokenizer from "
                f"{self.source or 'memory'}: it has neither a continuing-subword prefix nor a Metaspace/ByteLevel "
                "pre-tokenizer; turn whole-word masking off for it"
            )
        mask = np.zeros(self.vocab_size, dtype=bool)
        special = set(self.special_ids)
        for token, token_id in self.backend.get_vocab(with_added_tokens=True).items():
            if token_id in special:
                continue
            mask[token_id] = token.startswith(prefix) if prefix else not token.startswith(marker)
        return mask

    # ---------------------------------------------------------------- encode
    def segment(self, text: str) -> str:
        """The text as the model sees it: shipped tokenizers take raw text."""
        return text

    def encode(self, text: str) -> TokenizedText:
        """Ids and character offsets into ``text`` itself; no special tokens added."""
        return self.encode_batch([text])[0]

    def encode_batch(self, texts: list[str]) -> list[TokenizedText]:
        marker = self._word_start_marker()
        results = []
        for text, encoding in zip(texts, self.backend.encode_batch(texts, add_special_tokens=False), strict=True):
            offsets = []
            for token, (start, end) in zip(encoding.tokens, encoding.offsets, strict=True):
                start, end = _trim_whitespace(text, start, end)
                if marker is not None and token == marker:
                    # A bare word-start marker stands for a space, not for the character it is aligned to.
                    end = start
                offsets.append((start, end))
            results.append(TokenizedText(list(encoding.ids), offsets, list(encoding.tokens)))
        return results

    def encode_ids_batch(self, texts: list[str]) -> list[list[int]]:
        """Ids only, for corpus tokenization: the Rust batch encoder on every core, no offsets."""
        return [e.ids for e in self.backend.encode_batch_fast(texts, add_special_tokens=False)]

    def check_unknown_rate(self, sample_texts: Iterable[str], limit: float = UNKNOWN_RATE_LIMIT) -> float:
        """Share of unknown-token ids in a sample; warns (with the likely cause) above ``limit``."""
        ids = self.encode_ids_batch([t for t in sample_texts if t])
        total = sum(map(len, ids))
        share = sum(row.count(self.unk_id) for row in ids) / total if total else 0.0
        if share > limit:
            if self._decomposes_hangul():
                cause = (
                    "its normalizer decomposes Hangul syllables into jamo (do_lower_case/strip_accents); set "
                    f'"do_lower_case": false and "strip_accents": false in {TOKENIZER_CONFIG}'
                )
            else:
                cause = "the vocabulary does not cover this text (another language or script?)"
            log.warning(
                "%.1f%% of the tokens of the sample are %s (id %d) with the tokenizer from %s: %s",
                100 * share,
                self.id_to_token(self.unk_id),
                self.unk_id,
                self.source or "memory",
                cause,
            )
        return share

    # ---------------------------------------------------------------- decode
    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        """Text of ``ids`` through the checkpoint's own decoder."""
        if skip_special_tokens:
            special = set(self.special_ids)
            ids = [i for i in ids if i not in special]
        return self.backend.decode(list(ids), skip_special_tokens=False)

    # --------------------------------------------------------------- save/load
    def save(self, directory: str | os.PathLike) -> Path:
        """Write files that :meth:`load` (and transformers) turn into the same ids."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.hf_tokenizer.save_pretrained(str(directory))
        # BertTokenizer rebuilds its normalizer from these keys on load, so they must be the effective ones.
        config_path = directory / TOKENIZER_CONFIG
        config = _read_json(config_path)
        config["do_lower_case"] = self.lowercase
        normalizer = _bert_normalizer(self._spec)
        if normalizer is not None:
            config["strip_accents"] = normalizer.get("strip_accents")
        config_path.write_text(json.dumps(config, ensure_ascii=False, indent=2), encoding="utf-8")
        if self._spec.get("model", {}).get("type") == "WordPiece":
            # The klue/bert layout, for tools that read vocab.txt (v5 save_pretrained no longer writes it).
            vocab = sorted(self.backend.get_vocab(with_added_tokens=True).items(), key=lambda kv: kv[1])
            (directory / VOCAB_TXT).write_text("".join(token + "\n" for token, _ in vocab), encoding="utf-8")
        return directory

    def close(self) -> None:
        """Nothing to stop: there is no worker pool (kept for the shared interface)."""

    def __repr__(self) -> str:
        return (
            f"ShippedTokenizer({self.source or 'memory'}, {type(self.hf_tokenizer).__name__}, "
            f"vocab {self.vocab_size}, lowercase={self.lowercase})"
        )


def _trim_whitespace(text: str, start: int, end: int) -> tuple[int, int]:
    """The span without leading/trailing whitespace (a ``▁`` token's span includes the space it replaced)."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end

"""Configurable cleaning of raw corpus text, with counts of what each step changed.

Steps run in a fixed order, each switched by its own setting:
  1. ``normalization``  Unicode normalization (NFKC by default). Decomposed Hangul
     as macOS writes it (NFD jamo sequences) comes out composed.
  2. ``strip_control``  drop control characters and NUL (Mecab stops reading at NUL).
  3. ``collapse_whitespace``  runs of whitespace become one space; ends are stripped.
  4. ``squeeze_repeats``  optional, for comment-style text: a character repeated more
     than ``max_repeat`` times is cut to ``max_repeat`` (ㅋㅋㅋㅋㅋ -> ㅋㅋ).
  5. ``mask_personal_data``  optional: e-mail addresses, phone numbers and resident
     registration numbers become placeholders, because a model trained on raw
     personal data gives it back through fill-mask.
Exact-duplicate documents are removed by :class:`DuplicateFilter`, which works on
whole documents after cleaning.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass

# Cc (control) characters except the whitespace ones, which step 3 handles; plus
# the Unicode "format" characters that are invisible in text (zero-width space,
# BOM, bidi marks).
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b\u200e\u200f\u2028\u2029\ufeff]")
_WHITESPACE_RE = re.compile(r"\s+")
# Hangul compatibility jamo (ㅋ, ㅠ, ㄱ): what people type for ㅋㅋ and ㅠㅠ. NFKC
# would turn them into conjoining jamo (ㅋ U+314B -> ᄏ U+110F), which render as
# broken syllable parts and can even compose with a following vowel, so the
# compatibility forms are left out of NFKC/NFKD.
_COMPAT_JAMO_RE = re.compile(r"([\u3131-\u318e]+)")

# Personal data. Patterns are deliberately conservative: a false positive costs a
# placeholder, a false negative leaks data into a model.
_EMAIL_RE = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
# Resident registration number: YYMMDD-GNNNNNN, G in 1-4 (citizens) or 5-8 (foreigners).
_RRN_RE = re.compile(r"(?<!\d)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\s?-\s?[1-8]\d{6}(?!\d)")
# Korean mobile and landline numbers: 010-1234-5678, 02-123-4567, 031.123.4567, +82 10 ...
_PHONE_RE = re.compile(
    r"(?<!\d)(?:\+82[-.\s]?)?0?(?:1[016789]|2|[3-6][1-5]|70)[-.\s]?\d{3,4}[-.\s]?\d{4}(?!\d)"
)

EMAIL_PLACEHOLDER = "[EMAIL]"
PHONE_PLACEHOLDER = "[PHONE]"
RRN_PLACEHOLDER = "[RRN]"


@dataclass(frozen=True)
class CleaningConfig:
    normalization: str | None = "NFKC"  # NFC, NFKC, NFD, NFKD, or None to skip
    strip_control: bool = True
    collapse_whitespace: bool = True
    squeeze_repeats: bool = False
    max_repeat: int = 2
    mask_personal_data: bool = False
    drop_duplicate_documents: bool = True

    def __post_init__(self):
        if self.normalization not in (None, "NFC", "NFKC", "NFD", "NFKD"):
            raise ValueError(
                f"cleaning.normalization={self.normalization!r}: use one of NFC, NFKC, NFD, NFKD or null"
            )
        if self.max_repeat < 1:
            raise ValueError(f"cleaning.max_repeat={self.max_repeat}: must be at least 1")


class TextCleaner:
    """Applies the configured steps to one text at a time and counts changes.

    ``counts[step]`` is the number of texts that step changed; the
    ``masked_*`` counts are the number of personal-data matches replaced.
    """

    def __init__(self, config: CleaningConfig):
        self.config = config
        self.counts: Counter[str] = Counter()
        # (.)\1{n,} matches a run of more than n copies of one character.
        self._repeat_re = re.compile(rf"(.)\1{{{config.max_repeat},}}")

    def _apply(self, step: str, text: str, new_text: str) -> str:
        if new_text != text:
            self.counts[step] += 1
        return new_text

    def __call__(self, text: str) -> str:
        cfg = self.config
        if cfg.normalization:
            text = self._apply("normalization", text, self._normalize(text))
        if cfg.strip_control:
            text = self._apply("strip_control", text, _CONTROL_RE.sub("", text))
        if cfg.collapse_whitespace:
            text = self._apply("collapse_whitespace", text, _WHITESPACE_RE.sub(" ", text).strip())
        if cfg.squeeze_repeats:
            squeezed = self._repeat_re.sub(lambda m: m.group(1) * cfg.max_repeat, text)
            text = self._apply("squeeze_repeats", text, squeezed)
        if cfg.mask_personal_data:
            text = self._mask_personal_data(text)
        return text

    def _normalize(self, text: str) -> str:
        form = self.config.normalization
        if form in ("NFC", "NFD") or not _COMPAT_JAMO_RE.search(text):
            return unicodedata.normalize(form, text)
        # Odd pieces of the split are jamo runs: keep them as typed.
        pieces = _COMPAT_JAMO_RE.split(text)
        return "".join(p if i % 2 else unicodedata.normalize(form, p) for i, p in enumerate(pieces))

    def _mask_personal_data(self, text: str) -> str:
        # E-mail first (its local part may hold digits), then RRN before phone
        # numbers (an RRN's tail would otherwise look like a phone number).
        for name, pattern, placeholder in (
            ("masked_email", _EMAIL_RE, EMAIL_PLACEHOLDER),
            ("masked_rrn", _RRN_RE, RRN_PLACEHOLDER),
            ("masked_phone", _PHONE_RE, PHONE_PLACEHOLDER),
        ):
            text, replaced = pattern.subn(placeholder, text)
            self.counts[name] += replaced
        return text


class DuplicateFilter:
    """Remembers document hashes and flags exact repeats (after cleaning).

    Holds a 16-byte digest per document, not the text: a million documents cost
    about 100 MB of Python objects at most.
    """

    def __init__(self):
        self._seen: set[bytes] = set()
        self.duplicates = 0

    def is_duplicate(self, sentences: list[str]) -> bool:
        digest = hashlib.blake2b("\n".join(sentences).encode("utf-8"), digest_size=16).digest()
        if digest in self._seen:
            self.duplicates += 1
            return True
        self._seen.add(digest)
        return False

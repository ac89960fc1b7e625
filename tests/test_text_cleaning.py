import unicodedata

import pytest

from bert_lm.corpus.cleaning import CleaningConfig, DuplicateFilter, TextCleaner


def test_decomposed_hangul_comes_out_composed():
    composed = "한국어 문장"
    decomposed = unicodedata.normalize("NFD", composed)  # how macOS writes file names and text
    assert decomposed != composed
    cleaner = TextCleaner(CleaningConfig())
    assert cleaner(decomposed) == composed
    assert cleaner.counts["normalization"] == 1


def test_nfkc_folds_compatibility_characters():
    assert TextCleaner(CleaningConfig())("ＡＢＣ１２３") == "ABC123"
    assert TextCleaner(CleaningConfig(normalization=None))("ＡＢＣ") == "ＡＢＣ"


def test_control_characters_and_nul_are_removed():
    cleaner = TextCleaner(CleaningConfig())
    assert cleaner("가\x00나\x07다\u200b라") == "가나다라"
    assert cleaner.counts["strip_control"] == 1


def test_whitespace_collapsed_and_stripped():
    cleaner = TextCleaner(CleaningConfig())
    assert cleaner("  안녕 \t\n  하세요  ") == "안녕 하세요"
    assert TextCleaner(CleaningConfig(collapse_whitespace=False))("a  b") == "a  b"


def test_squeeze_repeats_is_optional():
    text = "ㅋㅋㅋㅋㅋ 너무 웃겨요!!!!!"
    assert TextCleaner(CleaningConfig())(text) == text
    squeezer = TextCleaner(CleaningConfig(squeeze_repeats=True, max_repeat=2))
    assert squeezer(text) == "ㅋㅋ 너무 웃겨요!!"
    assert squeezer.counts["squeeze_repeats"] == 1


@pytest.mark.parametrize(
    "text, expected, counter",
    [
        ("문의는 hong.gil@example.co.kr 로 주세요", "문의는 [EMAIL] 로 주세요", "masked_email"),
        ("연락처 010-1234-5678 입니다", "연락처 [PHONE] 입니다", "masked_phone"),
        ("사무실 02-123-4567", "사무실 [PHONE]", "masked_phone"),
        ("주민번호 900101-1234567 유출", "주민번호 [RRN] 유출", "masked_rrn"),
    ],
)
def test_personal_data_masking(text, expected, counter):
    cleaner = TextCleaner(CleaningConfig(mask_personal_data=True))
    assert cleaner(text) == expected
    assert cleaner.counts[counter] == 1
    assert TextCleaner(CleaningConfig())(text) == text  # off by default


def test_masking_leaves_ordinary_numbers_alone():
    cleaner = TextCleaner(CleaningConfig(mask_personal_data=True))
    text = "2024년 3월 기준금리는 3.5%이고 인구는 51,000,000명이다."
    assert cleaner(text) == text


def test_duplicate_filter_flags_exact_repeats_only():
    seen = DuplicateFilter()
    assert not seen.is_duplicate(["가", "나"])
    assert seen.is_duplicate(["가", "나"])
    assert not seen.is_duplicate(["가", "나", "다"])
    assert seen.duplicates == 1


def test_bad_settings_name_the_key():
    with pytest.raises(ValueError, match="cleaning.normalization"):
        CleaningConfig(normalization="NFX")


def test_nfkc_keeps_compatibility_jamo_as_typed():
    # NFKC alone maps ㅋ (U+314B) to the conjoining ᄏ (U+110F) and ㅏ would compose.
    cleaner = TextCleaner(CleaningConfig(normalization="NFKC"))
    assert cleaner("ㅋㅋㅋ ㅠㅠ ＡＢ") == "ㅋㅋㅋ ㅠㅠ AB"
    assert cleaner("ㅋㅏ") == "ㅋㅏ"

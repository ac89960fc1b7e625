import pytest

from bert_lm.corpus.sentence_split import split_sentences


@pytest.mark.parametrize(
    "paragraph, expected",
    [
        ("금리가 3.5% 올랐다. 그래서 문제다.", ["금리가 3.5% 올랐다.", "그래서 문제다."]),
        # sentence-final endings without punctuation
        ("국민 여러분 안녕하세요 저는 학부모입니다 도와주세요", ["국민 여러분 안녕하세요", "저는 학부모입니다", "도와주세요"]),
        # a connective ending does not end a sentence
        ("그가 왔다고 했다 그리고 갔다", ["그가 왔다고 했다", "그리고 갔다"]),
        # punctuation inside quotes and brackets does not split
        ("그는 “정말 좋다. 최고다.”라고 말했다. 다음이다.", ["그는 “정말 좋다. 최고다.”라고 말했다.", "다음이다."]),
        ("(참고: 예시다. 괄호 안) 끝났다.", ["(참고: 예시다. 괄호 안) 끝났다."]),
        # ellipsis mid-sentence vs after a final ending
        ("그래서... 결국 포기했다.", ["그래서... 결국 포기했다."]),
        ("잘 모르겠어요... 그렇죠?", ["잘 모르겠어요...", "그렇죠?"]),
        # repeated punctuation and Latin abbreviations
        ("정말 왔다!! 진짜?", ["정말 왔다!!", "진짜?"]),
        ("e.g. 이런 경우다. Mr. Kim이 왔다.", ["e.g. 이런 경우다.", "Mr. Kim이 왔다."]),
        # laughter after a sentence stays with it
        ("너무 웃겨요 ㅋㅋㅋ 다음에 또 봐요", ["너무 웃겨요 ㅋㅋㅋ", "다음에 또 봐요"]),
    ],
)
def test_tricky_cases(paragraph, expected):
    assert split_sentences(paragraph) == expected


def test_no_text_is_lost():
    paragraph = "첫 문장이다. 둘째 문장입니다! 셋째는 “인용. 부분”이다... 넷째 3.14"
    assert " ".join(split_sentences(paragraph)).split() == paragraph.split()


def test_empty_paragraph():
    assert split_sentences("   ") == []

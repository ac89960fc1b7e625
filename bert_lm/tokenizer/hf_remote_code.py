"""Make a saved Mecab-aware tokenizer load correctly in ``transformers`` (remote code).

``tokenizer.json`` is the WordPiece part only: on raw Korean it gives wrong ids,
silently, unless the Mecab step runs first. :func:`write_remote_tokenizer` writes
into a saved tokenizer (or HF export) directory a tokenizer class that does run it:

* ``tokenization_bert_lm.py``: ``BertLmMecabTokenizer``, a ``PreTrainedTokenizerFast``
  whose ``_encode_plus`` (the one entry point of ``__call__``, ``encode`` and
  ``tokenize`` in transformers 5) runs Mecab on each text and text pair, then the
  WordPiece; ``offset_mapping`` points into the raw text. Template:
  ``remote_code/tokenization_bert_lm.py``.
* ``mecab_segmenter.py`` and ``mecab_tagger.py``: our own modules, copied at export
  time with their ``bert_lm`` imports made relative, so that there is one
  implementation of the Mecab step (transformers copies a remote module's
  relative imports of sibling files along with it).
* ``tokenizer_config.json`` gains ``tokenizer_class`` and ``auto_map``.

Loading, checked with transformers 5.23:

* ``AutoTokenizer.from_pretrained(d, trust_remote_code=True)`` and
  ``pipeline("fill-mask", model=d, trust_remote_code=True)`` use
  ``BertLmMecabTokenizer``: same ids and offsets as ``KoreanTokenizer.encode``.
* **Without** ``trust_remote_code`` (or with ``trust_remote_code=False``), when the
  directory has a ``config.json`` whose ``model_type`` has a built-in tokenizer
  (``bert``, as our exports do), transformers *silently* falls back to a plain
  ``PreTrainedTokenizerFast`` built from tokenizer.json: no error, no warning, no
  Mecab step. WordPiece's greedy longest match then runs over whole words instead of
  morphemes and gives other ids wherever the two cuts differ (``부탁드립니다`` as one
  token instead of ``부탁 ##드립니다``, ``[MASK]의`` as ``[MASK] 의`` instead of
  ``[MASK] ##의``: 10 of the first 200 sample lines with a 3,000-token vocabulary),
  and there are no ``token_type_ids``. Nothing written into the
  directory can change that. A directory without ``config.json`` (a tokenizer on
  its own) raises instead: transformers asks for ``trust_remote_code=True``.
* ``PreTrainedTokenizerFast.from_pretrained(d)`` still loads tokenizer.json as the
  WordPiece part alone (for callers that run :func:`mecab_segmenter.segment` themselves).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import os
import re
from pathlib import Path

from bert_lm.tokenizer.korean_tokenizer import SETTINGS_FILE

REMOTE_MODULE = "tokenization_bert_lm"
REMOTE_CLASS = "BertLmMecabTokenizer"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
_TEMPLATE = Path(__file__).resolve().parent / "remote_code" / f"{REMOTE_MODULE}.py"
# Our modules that the remote code needs, and the sibling module each becomes.
SIBLING_MODULES = {
    "bert_lm.tokenizer.mecab_segmenter": "mecab_segmenter",
    "bert_lm.corpus.mecab_tagger": "mecab_tagger",
}


def write_remote_tokenizer(export_dir: str | os.PathLike) -> bool:
    """Add the remote-code tokenizer to a directory saved by ``KoreanTokenizer.save``
    (or an HF export holding its files).

    Returns True when the code was written; False, writing nothing, for a plain
    WordPiece tokenizer (``mecab: false``), which tokenizer.json alone handles.
    Safe to run again on the same directory.
    """
    export_dir = Path(export_dir)
    settings_file, config_file = export_dir / SETTINGS_FILE, export_dir / TOKENIZER_CONFIG_FILE
    for required in (settings_file, config_file):
        if not required.is_file():
            raise FileNotFoundError(
                f"{required} is missing: write_remote_tokenizer needs a directory written by "
                "KoreanTokenizer.save (or an HF export that copied its files)."
            )
    if not json.loads(settings_file.read_text(encoding="utf-8")).get("mecab", False):
        return False
    for module_name, source in remote_code_sources().items():
        (export_dir / f"{module_name}.py").write_text(source, encoding="utf-8")
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config["tokenizer_class"] = REMOTE_CLASS
    # [slow class, fast class]: transformers 5 takes the second when it is set.
    config["auto_map"] = {"AutoTokenizer": [None, f"{REMOTE_MODULE}.{REMOTE_CLASS}"]}
    config_file.write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")
    return True


def remote_code_sources() -> dict[str, str]:
    """Module name -> source of every file the remote code consists of."""
    sources = {REMOTE_MODULE: _TEMPLATE.read_text(encoding="utf-8")}
    for dotted_name, sibling in SIBLING_MODULES.items():
        source = inspect.getsource(importlib.import_module(dotted_name))
        sources[sibling] = _with_relative_imports(source, dotted_name)
    return sources


def _with_relative_imports(source: str, dotted_name: str) -> str:
    """``from bert_lm.x.y import z`` -> ``from .y import z`` for the copied modules.

    The export directory has no ``bert_lm`` package; any other import of it would
    only fail on the user's machine, so it fails here, at export time.
    """
    for imported, sibling in SIBLING_MODULES.items():
        source = re.sub(rf"^(\s*)from {re.escape(imported)} import ", rf"\1from .{sibling} import ", source, flags=re.M)
    for node in ast.walk(ast.parse(source)):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        leftover = [name for name in names if name.split(".")[0] == "bert_lm"]
        if leftover:
            raise RuntimeError(
                f"{dotted_name} imports {leftover[0]} (line {node.lineno}), which the exported remote "
                "tokenizer code cannot import: add that module to SIBLING_MODULES in "
                "bert_lm/tokenizer/hf_remote_code.py (as `from bert_lm.... import name`)."
            )
    return source

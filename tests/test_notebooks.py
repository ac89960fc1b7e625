"""The notebooks run top to bottom on tiny settings, and are committed without outputs.

Each notebook is executed with nbclient in a kernel of the interpreter running
pytest: a ``python3`` kernelspec for ``sys.executable`` is written into tmp_path and
put first on ``JUPYTER_PATH``, so neither a missing kernelspec (a fresh venv where
ipykernel's data files were not installed) nor a user-level ``python3`` kernel of
another Python changes what runs. The kernel starts in tmp_path, with the project on
``PYTHONPATH``, and the notebooks write only under ``BERT_LM_WORK_DIR`` (tmp_path).
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import REPO_ROOT

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
TOKENIZER_NOTEBOOK = NOTEBOOK_DIR / "tokenizer_and_fill_mask.ipynb"
NER_NOTEBOOK = NOTEBOOK_DIR / "ner_error_analysis.ipynb"
CELL_TIMEOUT_S = 300


@pytest.fixture
def notebook_env(tmp_path, monkeypatch):
    """Kernel and environment for one notebook run; returns (kernel cwd, work dir)."""
    from ipykernel.kernelspec import write_kernel_spec

    jupyter_dir = tmp_path / "jupyter"
    write_kernel_spec(jupyter_dir / "kernels" / "python3")
    monkeypatch.setenv("JUPYTER_PATH", str(jupyter_dir))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "jupyter_runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    for name in ("BERT_LM_RUN_DIR", "BERT_LM_NER_RUN_DIR", "BERT_LM_NER_EVAL_FILE"):
        monkeypatch.delenv(name, raising=False)  # the notebooks' own tiny runs, not a developer's
    work_dir = tmp_path / "work"
    monkeypatch.setenv("BERT_LM_WORK_DIR", str(work_dir))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    return cwd, work_dir


def execute(path: Path, cwd: Path) -> dict[str, str]:
    """Run the notebook; returns each code cell's text output (stdout, stderr, text/plain) by cell id."""
    notebook_listing = sorted(p.name for p in NOTEBOOK_DIR.iterdir())
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                            resources={"metadata": {"path": str(cwd)}})
    client.execute()  # raises CellExecutionError, with the cell and traceback, on the first error
    assert sorted(p.name for p in NOTEBOOK_DIR.iterdir()) == notebook_listing, "nothing written into notebooks/"
    texts = {}
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        assert not [o for o in cell.outputs if o.output_type == "error"], cell.id
        parts = [o.get("text", "") for o in cell.outputs if o.output_type == "stream"]
        parts += [o.get("data", {}).get("text/plain", "") for o in cell.outputs if "data" in o]
        texts[cell.id] = "".join(parts)
    texts["_images"] = " ".join(
        cell.id for cell in notebook.cells if cell.cell_type == "code"
        for o in cell.outputs if "image/png" in o.get("data", {})
    )  # fmt: skip
    return texts


@pytest.mark.parametrize("path", sorted(NOTEBOOK_DIR.glob("*.ipynb")), ids=lambda p: p.name)
def test_committed_notebook_has_no_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    assert notebook.metadata.kernelspec.name == "python3"
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: cell {cell.id} has outputs"
    assert "parameters" in notebook.cells[1].metadata.get("tags", []), "a parameters cell at the top"


def test_notebooks_are_the_two_documented():
    names = {p.name for p in NOTEBOOK_DIR.glob("*.ipynb")}
    assert names == {TOKENIZER_NOTEBOOK.name, NER_NOTEBOOK.name}
    readme = (NOTEBOOK_DIR / "README.md").read_text(encoding="utf-8")
    assert all(name in readme for name in names)


def test_tokenizer_and_fill_mask_notebook_runs(notebook_env, monkeypatch):
    cwd, work_dir = notebook_env
    monkeypatch.setenv("BERT_LM_PRETRAIN_STEPS", "8")
    out = execute(TOKENIZER_NOTEBOOK, cwd)

    assert "국가 ##의 미래 ##를" in out["segment"]
    assert "round trip: True" in out["offsets"]
    assert re.search(r"##순\s+\(\s*1,\s*2\)\s+'순'", out["offsets"]), "a ## piece's span covers its characters only"
    assert re.search(r"mecab\s+\d+\s+\d+\.\d+\s+\d+\.\d+%", out["stats"]), out["stats"]
    assert "same ids as KoreanTokenizer: True" in out["hf"] and "False" not in out["hf"]
    assert f"run_dir: {work_dir / 'pretrain_run'}" in out["pretrain"]
    # Two masked texts x TOP_K=5 candidates, from bert_lm.fill_mask and from the HF pipeline.
    assert len(re.findall(r"\[MASK\] 1 #\d  \d\.\d{4}  \S+", out["fill-mask"])) == 10, out["fill-mask"]
    assert len(re.findall(r"pipeline #\d  \d\.\d{4}", out["pipeline"])) == 10, out["pipeline"]
    for shared, differences in re.findall(r"(\d)/5 candidates shared with bert_lm.fill_mask, largest score "
                                          r"difference (\S+)", out["pipeline"]):
        assert int(shared) >= 4 and float(differences) < 1e-4, out["pipeline"]


def test_ner_error_analysis_notebook_runs(notebook_env, monkeypatch):
    cwd, work_dir = notebook_env
    monkeypatch.setenv("BERT_LM_FINETUNE_EPOCHS", "2")
    out = execute(NER_NOTEBOOK, cwd)

    assert f"run_dir: {work_dir / 'ner_run'}" in out["run"]
    assert "40 sentences from" in out["predict"]
    report = out["report"]
    assert re.search(r"type\s+precision\s+recall\s+f1\s+support", report), report
    for row in ("DT", "LC", "OG", "PS", "QT", "TI", "micro avg", "macro avg"):
        assert re.search(rf"^{row}\s+\d\.\d{{4}}\s+\d\.\d{{4}}\s+\d\.\d{{4}}\s+\d+$", report, re.M), row
    assert re.search(r"entity_macro_f1: \d\.\d{4}", report)
    assert "SPURIOUS" in out["confusion"] and "MISSED" in out["confusion"]
    assert "confusion" in out["_images"].split(), "the confusion matrix is shown as a PNG"
    assert re.search(r"^all\s+\d+\s+\d+\s+\d+\s+\d+\s+\d+$", out["kinds"], re.M), out["kinds"]
    worst = out["worst"]
    assert worst.count("  gold: ") == worst.count("  pred: ") == 5, worst
    assert "entity F1" in worst and "verdict" in worst


def test_notebook_kernel_is_this_interpreter(notebook_env):
    from jupyter_client.kernelspec import KernelSpecManager

    spec = KernelSpecManager().get_kernel_spec("python3")
    assert spec.argv[0] == sys.executable

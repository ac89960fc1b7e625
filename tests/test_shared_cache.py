"""Runs that share a cache directory: two processes starting together build each step's
output once and agree on it; settings that cannot give a validation split or a corpus fail
at once, naming the key."""

from __future__ import annotations

import filecmp
import json
import multiprocessing
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

import pytest

from bert_lm.corpus.cleaning import CleaningConfig
from bert_lm.corpus.prepare import (
    PrepareSettings,
    build_lock,
    is_prepared,
    lock_path_for,
    prepare_corpus,
    publish_directory,
)
from tests.conftest import REPO_ROOT, SAMPLE_CORPUS

# Wrapped in the racing processes to count real builds and to hold each build long enough
# that the other process certainly arrives while it runs.
BUILD_STEPS = (
    ("bert_lm.training.corpus_pipeline", "prepare_corpus"),
    ("bert_lm.training.corpus_pipeline", "_train_and_publish"),
    ("bert_lm.data.token_cache", "_build"),
)


def _compose(overrides):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from bert_lm.config.hydra_setup import CONFIG_DIR, setup_hydra

    setup_hydra()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def _count_builds(hold_s: float) -> dict[str, int]:
    import importlib

    counts = {}
    for module_name, name in BUILD_STEPS:
        module = importlib.import_module(module_name)
        original = getattr(module, name)
        counts[name] = 0

        def wrapper(*args, _original=original, _name=name, **kwargs):
            counts[_name] += 1
            time.sleep(hold_s)
            return _original(*args, **kwargs)

        setattr(module, name, wrapper)
    return counts


def _prepare_everything(cache_dir: str, barrier, results, hold_s: float) -> None:
    """One 'run' up to the token caches: what run.py and every node's prepare_data do."""
    try:
        from bert_lm.data.token_cache import build_token_cache
        from bert_lm.tokenizer.loading import load_tokenizer
        from bert_lm.training.corpus_pipeline import ensure_prepared_corpus, ensure_tokenizer

        counts = _count_builds(hold_s)
        cfg = _compose(["data=sample", f"paths.cache_dir={cache_dir}"])
        barrier.wait(timeout=120)  # both processes start the steps at the same moment
        prepared = ensure_prepared_corpus(cfg.data, cfg.paths.cache_dir, show_progress=False)
        tokenizer_dir = ensure_tokenizer(cfg.tokenizer, prepared, cfg.paths.cache_dir, show_progress=False)
        tokenizer = load_tokenizer(tokenizer_dir)
        try:
            caches = {
                split: build_token_cache(
                    prepared / f"{split}.txt", tokenizer, Path(cache_dir) / "tokens", progress=False
                )
                for split in ("train", "valid")
            }
        finally:
            tokenizer.close()
        results.put(
            {
                "pid": os.getpid(),
                "prepared": str(prepared),
                "tokenizer": str(tokenizer_dir),
                "caches": {split: str(cache.directory) for split, cache in caches.items()},
                "build_ids": {split: cache.meta["build_id"] for split, cache in caches.items()},
                "builds": counts,
            }
        )
    except BaseException:
        results.put({"pid": os.getpid(), "error": traceback.format_exc()})


def _race(cache_dir: Path, hold_s: float) -> list[dict]:
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(2), context.Queue()
    processes = [
        context.Process(target=_prepare_everything, args=(str(cache_dir), barrier, results, hold_s)) for _ in range(2)
    ]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=240) for _ in processes]
    for process in processes:
        process.join(timeout=60)
    errors = [outcome["error"] for outcome in outcomes if "error" in outcome]
    assert not errors, "\n".join(errors)
    return outcomes


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


@pytest.mark.parametrize("hold_s", [0.0, 1.5], ids=["as-fast-as-possible", "builds-overlap"])
def test_two_processes_on_one_fresh_cache_build_once_and_agree(tmp_path, hold_s):
    cache_dir = tmp_path / "cache"
    first, second = _race(cache_dir, hold_s)

    # The same prepared corpus, tokenizer and token caches: the very same directories.
    for key in ("prepared", "tokenizer", "caches", "build_ids"):
        assert first[key] == second[key], key
    # Each step ran once: the second process waited for the first and reused its output
    # (a second WordPiece training would not even give the same vocabulary).
    builds = {step: first["builds"][step] + second["builds"][step] for step in first["builds"]}
    assert builds == {"prepare_corpus": 1, "_train_and_publish": 1, "_build": 2}  # _build: train and valid

    prepared = Path(first["prepared"])
    assert is_prepared(prepared) and (Path(first["tokenizer"]) / "tokenizer.json").is_file()
    # Nothing half-built or private left; only the lock files beside the outputs.
    leftovers = [p.name for p in cache_dir.rglob(".*") if not p.name.endswith(".lock")]
    assert leftovers == []
    for path in (prepared, Path(first["tokenizer"]), *map(Path, first["caches"].values())):
        assert lock_path_for(path).is_file() and not list(path.glob("*.lock"))

    # A third run on the same cache reuses everything (same ids, no new build).
    [third] = _race_one(cache_dir)
    assert {k: third[k] for k in ("prepared", "tokenizer", "caches", "build_ids")} == {
        k: first[k] for k in ("prepared", "tokenizer", "caches", "build_ids")
    }
    assert sum(third["builds"].values()) == 0


def _race_one(cache_dir: Path) -> list[dict]:
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(1), context.Queue()
    process = context.Process(target=_prepare_everything, args=(str(cache_dir), barrier, results, 0.0))
    process.start()
    outcome = results.get(timeout=240)
    process.join(timeout=60)
    assert "error" not in outcome, outcome["error"]
    return [outcome]


def test_two_builds_in_separate_caches_give_identical_corpus_files(tmp_path):
    # The prepared corpus is a pure function of its inputs: the identity that lets a
    # publisher keep one already in place instead of its own.
    settings = PrepareSettings(source="plain", root=str(SAMPLE_CORPUS), valid_ratio=0.1)
    for name in ("a", "b"):
        prepare_corpus(settings, CleaningConfig(), tmp_path / name, show_progress=False)
    assert filecmp.dircmp(tmp_path / "a", tmp_path / "b").diff_files == []


def test_publish_keeps_an_identical_corpus_already_in_place(tmp_path):
    settings = PrepareSettings(source="plain", root=str(SAMPLE_CORPUS), valid_ratio=0.1)
    out = tmp_path / "prepared"
    prepare_corpus(settings, CleaningConfig(), out, show_progress=False)
    inode = out.stat().st_ino
    # A process that built without the lock publishes second: its rename finds a complete
    # identical corpus, keeps it, and discards its own copy.
    prepare_corpus(settings, CleaningConfig(), out, show_progress=False)
    assert out.stat().st_ino == inode
    # A different corpus (other settings) under the same directory replaces it.
    other = PrepareSettings(source="plain", root=str(SAMPLE_CORPUS), valid_ratio=0.3)
    stats = prepare_corpus(other, CleaningConfig(), out, show_progress=False)
    assert out.stat().st_ino != inode
    assert json.loads((out / "stats.json").read_text())["documents"] == stats["documents"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prepared"]  # no private directory left


def test_publish_replaces_an_incomplete_leftover(tmp_path):
    target, ours = tmp_path / "result", tmp_path / ".tmp-result-1"
    target.mkdir()
    (target / "partial").write_text("half")
    ours.mkdir()
    (ours / "done").write_text("all")
    assert publish_directory(ours, target, lambda d: (d / "done").is_file())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result"] and (target / "done").is_file()


def test_failed_build_leaves_no_lock_file(tmp_path):
    target = tmp_path / "tokens" / "train-abc"
    with pytest.raises(RuntimeError), build_lock(target, "a test result"):
        raise RuntimeError("build failed")
    assert list((tmp_path / "tokens").iterdir()) == []
    with build_lock(target, "a test result"):
        pass
    assert [p.name for p in (tmp_path / "tokens").iterdir()] == [".train-abc.lock"]


# ---------------------------------------------------------------------------------------
# Settings that would fail later, on an internal path: refused at once, naming the key


def test_valid_ratio_zero_is_refused_naming_the_key(tmp_path):
    from bert_lm.training.corpus_pipeline import ensure_prepared_corpus

    cfg = _compose(["data=sample", "data.valid_ratio=0"])
    with pytest.raises(ValueError, match=r"data\.valid_ratio=0.*needs a validation split"):
        ensure_prepared_corpus(cfg.data, tmp_path / "cache", show_progress=False)
    assert not (tmp_path / "cache").exists()


def test_prepared_corpus_without_validation_documents_is_refused_by_the_datamodule(tmp_path):
    from bert_lm.data.datamodule import PretrainingDataModule

    prepared = tmp_path / "prepared"
    prepare_corpus(
        PrepareSettings(source="plain", root=str(SAMPLE_CORPUS), valid_ratio=0.0), CleaningConfig(), prepared, False
    )
    datamodule = PretrainingDataModule(str(prepared), str(tmp_path / "no-tokenizer"), str(tmp_path / "cache"))
    with pytest.raises(ValueError, match=r"valid\.txt holds no document.*data\.valid_ratio"):
        datamodule._caches(tokenizer=None)


def test_corpus_too_small_for_a_validation_document(tmp_path):
    from bert_lm.training.corpus_pipeline import ensure_prepared_corpus

    corpus = tmp_path / "one.txt"
    corpus.write_text("하나뿐인 문서의 첫 문장입니다.\n둘째 문장입니다.\n[EOD]\n", encoding="utf-8")
    cfg = _compose(["data=sample", f"data.root={corpus}", "data.split_seed=1"])
    message = (
        r"too small to give the validation split a document: 1 documents, valid_ratio 0\.1 .*"
        r"add documents or raise data\.valid_ratio"
    )
    with pytest.raises(ValueError, match=message):
        ensure_prepared_corpus(cfg.data, tmp_path / "cache", show_progress=False)
    assert [p.name for p in (tmp_path / "cache" / "prepared").iterdir()] == []  # nothing left, no lock


def test_corpus_too_small_for_a_training_document(tmp_path):
    corpus = tmp_path / "two.txt"
    corpus.write_text("첫 문서입니다.\n[EOD]\n둘째 문서입니다.\n[EOD]\n", encoding="utf-8")
    settings = PrepareSettings(source="plain", root=str(corpus), valid_ratio=0.99)
    with pytest.raises(ValueError, match=r"too small to give the training split a document: 2 documents"):
        prepare_corpus(settings, CleaningConfig(), tmp_path / "out", show_progress=False)
    assert list(tmp_path.iterdir()) == [corpus]


def test_petitions_default_root_is_inside_the_project():
    cfg = _compose(["data=petitions"])
    root = Path(cfg.data.root)
    assert root == REPO_ROOT / "data" / "korean_petitions" and not cfg.data.download
    assert ".." not in root.parts and "shared" not in root.parts


def test_missing_petitions_root_names_data_root_and_the_download_option(tmp_path):
    from bert_lm.training.corpus_pipeline import ensure_prepared_corpus

    cfg = _compose(["data=petitions", f"data.root={tmp_path / 'korean_petitions'}"])
    with pytest.raises(FileNotFoundError, match=r"data\.root=.*korean_petitions does not exist.*data\.download=true"):
        ensure_prepared_corpus(cfg.data, tmp_path / "cache", show_progress=False)


def test_download_fetches_only_missing_months_once(tmp_path, monkeypatch):
    from bert_lm.training import corpus_pipeline

    calls = []

    def fake_download(root, months):
        calls.append(months)
        root.mkdir(parents=True, exist_ok=True)
        for month in months:
            text = json.dumps({"content": f"{month} 청원입니다. 둘째 문장입니다."}, ensure_ascii=False)
            (root / f"petitions_{month}").write_text((text + "\n") * 3, encoding="utf-8")
        return root

    monkeypatch.setattr(corpus_pipeline, "download_petitions", fake_download)
    root = tmp_path / "korean_petitions"
    root.mkdir()
    (root / "petitions_2017-08").write_text("", encoding="utf-8")  # an earlier, interrupted download
    cfg = _compose(["data=petitions", f"data.root={root}", "data.download=true"])
    corpus_pipeline.ensure_corpus_files(cfg.data)
    corpus_pipeline.ensure_corpus_files(cfg.data)
    assert calls == [("2019-04", "2019-05", "2019-06", "2019-07")]
    assert lock_path_for(root).is_file()


@pytest.mark.slow
def test_two_run_py_processes_on_one_fresh_cache(tmp_path):
    """The whole job twice at once on one cache, as a parallel multirun starts it."""
    commands = []
    for name in ("a", "b"):
        overrides = [
            "model=tiny",
            "train.train_nsp=false",
            "data.batch_size=8",
            "trainer.max_steps=2",
            "trainer.val_check_interval=2",
            "trainer.enable_progress_bar=false",
            "callbacks.throughput.window_size=2",
            f"paths.output_dir={tmp_path / name}",
            f"paths.cache_dir={tmp_path / 'cache'}",
            f"logger.tracking_uri=sqlite:///{tmp_path / name / 'mlflow.db'}",
            f"logger.artifact_location={tmp_path / name / 'artifacts'}",
        ]
        commands.append([sys.executable, "run.py", *overrides])
    runs = [
        subprocess.Popen(c, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in commands
    ]
    outputs = [run.communicate(timeout=600) for run in runs]
    for run, (_, err) in zip(runs, outputs, strict=True):
        assert run.returncode == 0, err[-3000:]
    tokenizers = [p for p in (tmp_path / "cache" / "tokenizers").iterdir() if p.is_dir()]
    assert len(tokenizers) == 1  # trained once, used by both
    exported = [_files(tmp_path / name / "hf_export") for name in ("a", "b")]
    for name in ("vocab.txt", "tokenizer.json"):
        assert exported[0][name] == exported[1][name] == (tokenizers[0] / name).read_bytes()


_START_LOGGER = """
import sys, time
from pathlib import Path
from omegaconf import OmegaConf
from bert_lm.training.run_support import build_logger
store, run_dir, start_at = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])
cfg = OmegaConf.create({"logger": {
    "_target_": "pytorch_lightning.loggers.MLFlowLogger", "tracking_uri": f"sqlite:///{store / 'mlflow.db'}",
    "experiment_name": "race", "artifact_location": str(store / "artifacts"), "run_name": run_dir.name,
    "log_model": False}})
run_dir.mkdir(parents=True)
while time.time() < start_at:  # both processes reach the fresh store at the same moment
    time.sleep(0.001)
build_logger(cfg, run_dir, [])
"""


@pytest.mark.slow
def test_two_jobs_starting_together_on_a_fresh_mlflow_store(tmp_path):
    """A parallel multirun shares one mlflow.db; MLflow migrates a new SQLite file unlocked."""
    start_at = time.time() + 8  # after both interpreters have imported MLflow and Lightning
    runs = [
        subprocess.Popen([sys.executable, "-c", _START_LOGGER, str(tmp_path), str(tmp_path / name), str(start_at)],
                         cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name in ("a", "b")
    ]
    for run in runs:
        _, err = run.communicate(timeout=120)
        assert run.returncode == 0, err[-3000:]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiments = [e for e in client.search_experiments() if e.name == "race"]
    assert len(experiments) == 1
    run_ids = {(tmp_path / name / "mlflow_run_id").read_text() for name in ("a", "b")}
    found = {r.info.run_id for r in client.search_runs([experiments[0].experiment_id])}
    assert len(run_ids) == 2 and run_ids == found

"""run.py end to end on tiny settings: MLflow store contents, resume, config checks."""

import itertools
import subprocess
import sys

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from mlflow.tracking import MlflowClient

from bert_lm.config.hydra_setup import CONFIG_DIR, check_overrides, setup_hydra
from bert_lm.training.pretraining_run import ConfigError, check_config, pretrain, resolve_resume
from tests.conftest import REPO_ROOT


def compose_config(overrides):
    setup_hydra()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def tiny_overrides(tmp_path, *extra):
    return [
        "model=tiny",
        "data.batch_size=8",
        "trainer.max_steps=4",
        "trainer.log_every_n_steps=1",
        "trainer.val_check_interval=2",
        "trainer.enable_progress_bar=false",
        "callbacks.throughput.window_size=2",
        f"paths.output_dir={tmp_path / 'run'}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"logger.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
        f"logger.artifact_location={tmp_path / 'artifacts'}",
        *extra,
    ]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("pretrain")
    overrides = tiny_overrides(tmp_path)
    run_dir, hf_dir = pretrain(compose_config(overrides), overrides)
    return tmp_path, run_dir, hf_dir


def test_run_writes_checkpoints_export_and_mlflow_run(tiny_run):
    tmp_path, run_dir, hf_dir = tiny_run
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (hf_dir / "config.json").is_file() and (hf_dir / "tokenizer.json").is_file()
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("bert-lm-pretraining")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.params["model/hidden_size"] == "64"
    assert run.data.params["train/train_nsp"] == "True"
    for metric in (
        "train/mlm_loss_step",
        "train/nsp_acc_step",
        "val/mlm_loss",
        "val/nsp_acc",
        "val/perplexity",
        "lr-AdamW/pg1",
    ):
        assert metric in run.data.metrics, metric
    assert any("items_per_sec" in name for name in run.data.metrics), "tokens/s is logged"
    assert run.data.metrics.get("train/device/flops_per_sec", 0) > 0, "model FLOP/s are logged"
    assert run.data.tags["mlflow.source.git.commit"]
    top_level = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"resolved_config.yaml", "tokenizer", "checkpoints", "hf_export"} <= top_level
    assert len(client.list_artifacts(run.info.run_id, "checkpoints")) == 1, "best checkpoint logged once"


def test_checkpoint_loads_with_weights_only(tiny_run):
    _, run_dir, _ = tiny_run
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert state["global_step"] == 4
    assert isinstance(state["hyper_parameters"]["model_config"], dict)


def test_resume_continues_from_saved_step_in_same_mlflow_run(tiny_run):
    tmp_path, run_dir, _ = tiny_run
    # Started, as from the command line, in a Hydra directory of its own, which it does not use.
    new_hydra_dir = tmp_path / "resume-hydra-dir"
    overrides = [
        f"paths.output_dir={new_hydra_dir}" if o.startswith("paths.output_dir=") else o
        for o in tiny_overrides(tmp_path, f"ckpt_path={run_dir}", "trainer.max_steps=6", "train.lr=0.0002")
    ]
    pretrain(compose_config(overrides), overrides)
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert state["global_step"] == 6
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("bert-lm-pretraining")
    (run,) = client.search_runs([experiment.experiment_id])  # the same run, continued
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/mlm_loss_step")]
    assert max(steps) >= 5
    resume_tags = {k: v for k, v in run.data.tags.items() if k.startswith("resume/")}
    assert resume_tags["resume/trainer/max_steps"] == "6" and resume_tags["resume/ckpt_path"] == str(run_dir)
    # A module setting changed on resume is a tag too (MLflow refuses to change a logged param).
    assert resume_tags["resume/train/lr"] == "0.0002"
    assert not any(str(new_hydra_dir) in value for value in resume_tags.values()), resume_tags


def test_resume_with_another_model_is_refused_before_the_run_record_is_touched(tiny_run):
    tmp_path, run_dir, _ = tiny_run
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("bert-lm-pretraining")
    (before,) = client.search_runs([experiment.experiment_id])
    last = run_dir / "checkpoints" / "last.ckpt"
    last_bytes = last.read_bytes()
    overrides = tiny_overrides(tmp_path, f"ckpt_path={run_dir}", "model.hidden_size=32", "model.intermediate_size=64")
    with pytest.raises(ConfigError, match=r"model\.hidden_size=64 \(this run: 32\).*started with"):
        pretrain(compose_config(overrides), overrides)
    (after,) = client.search_runs([experiment.experiment_id])
    assert after.info.status == before.info.status == "FINISHED"
    assert after.data.tags == before.data.tags and after.data.params == before.data.params
    assert last.read_bytes() == last_bytes


def test_a_run_that_never_validated_while_training_logs_the_checkpoint_its_export_holds(tmp_path):
    overrides = tiny_overrides(tmp_path, "trainer.max_steps=2", "trainer.limit_val_batches=0")
    run_dir, hf_dir = pretrain(compose_config(overrides), overrides)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("bert-lm-pretraining").experiment_id])
    assert [a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")] == ["checkpoints/last.ckpt"]
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert state["global_step"] == 2


def test_resume_request_that_finds_nothing_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoints/last.ckpt"):
        resolve_resume(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_resume(str(tmp_path / "missing.ckpt"))


def test_a_deepspeed_checkpoint_directory_resumes_given_as_its_run_or_itself(tmp_path):
    """DeepSpeed writes last.ckpt as a directory of shards; Lightning loads it from that path."""
    run_dir = tmp_path / "run"
    shards = run_dir / "checkpoints" / "last.ckpt" / "checkpoint"
    shards.mkdir(parents=True)
    (shards / "mp_rank_00_model_states.pt").write_bytes(b"")
    assert resolve_resume(str(run_dir)) == (run_dir / "checkpoints" / "last.ckpt", run_dir)
    assert resolve_resume(str(run_dir / "checkpoints" / "last.ckpt")) == (
        run_dir / "checkpoints" / "last.ckpt",
        run_dir,
    )


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["train.train_mlm=false", "train.train_nsp=false"], "enable at least one objective"),
        (["model.hidden_size=100", "model.num_attention_heads=3"], "hidden_size"),
        (["data.max_len=256"], "data.max_len=256 is above the 128 positions"),
        (["data=comments"], "data.root is not set: data=comments needs the corpus path"),
        (["data.pack_documents=true"], "data.pack_documents=true with train.train_nsp=true"),
        # The pre-LN recipe cannot become transformers' (post-LN) ELECTRA: refused, not silently dropped.
        (
            ["experiment=small_budget", "train.objective=electra"],
            "model.model_type=roberta-prelayernorm cannot be exported as transformers' ELECTRA",
        ),
    ],
)
def test_bad_settings_fail_before_data_work(overrides, message):
    with pytest.raises(ConfigError, match=message):
        check_config(compose_config(overrides))


def test_unknown_key_names_valid_keys(capsys):
    with pytest.raises(SystemExit) as exit_info:
        check_overrides(["train.learning_rate=1e-3"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "unknown config key 'train.learning_rate'" in err and "lr" in err and "warmup_steps" in err


@pytest.mark.parametrize(
    "model, data, tokenizer, mlm, nsp",
    [
        c
        for c in itertools.product(
            ["tiny", "small", "medium", "base"],
            ["sample", "petitions"],
            ["mecab_wordpiece", "wordpiece"],
            [True, False],
            [True, False],
        )
        if c[3] or c[4]
    ],
)
def test_every_combination_composes(model, data, tokenizer, mlm, nsp):
    cfg = compose_config(
        [f"model={model}", f"data={data}", f"tokenizer={tokenizer}", f"train.train_mlm={mlm}", f"train.train_nsp={nsp}"]
    )
    check_config(cfg)
    assert cfg.callbacks.model_checkpoint.monitor == ("val/mlm_loss" if mlm else "val/nsp_loss")


def test_run_py_command_line_prints_run_dir_and_export_last(tmp_path):
    result = subprocess.run(
        [sys.executable, "run.py", *tiny_overrides(tmp_path, "train.train_nsp=false", "trainer.max_steps=2")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    last_lines = result.stdout.strip().splitlines()[-2:]
    assert last_lines[0] == f"run_dir: {tmp_path / 'run'}"
    assert last_lines[1] == f"hf_export: {tmp_path / 'run' / 'hf_export'}"


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml")))
@pytest.mark.parametrize("tokenizer", ["mecab_wordpiece", "wordpiece"])
def test_every_experiment_file_composes_and_passes_the_checks(experiment, tokenizer):
    """An override file is only useful if it composes over the defaults and its model takes its data."""
    cfg = compose_config([f"experiment={experiment}", f"tokenizer={tokenizer}", "data=petitions"])
    check_config(cfg)  # e.g. data.max_len within the positions the RoBERTa offset leaves
    if experiment == "small_budget":
        assert cfg.model.model_type == "roberta-prelayernorm" and not cfg.train.train_nsp
        assert cfg.train.budget_minutes == 60 and cfg.model.hidden_size == 256
    if experiment == "small_budget_electra":
        assert cfg.train.objective == "electra" and cfg.model.model_type == "electra"
        assert cfg.callbacks.model_checkpoint.monitor == "val/disc_loss"


def test_every_ablation_of_the_budget_benchmark_composes_and_passes_the_checks():
    """bench/pretraining_budget.py --ablations runs for most of an hour: a lever that fails its config
    check (say, packing with NSP left on) should fail here, not twenty minutes into the benchmark."""
    import importlib.util

    bench_file = CONFIG_DIR.parent / "bench" / "pretraining_budget.py"
    spec = importlib.util.spec_from_file_location("pretraining_budget", bench_file)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert "recipe, packed documents" in bench.ABLATIONS
    for name, overrides in {**bench.RUNS, **bench.ABLATIONS}.items():
        cfg = compose_config([*bench.COMMON, "train.budget_minutes=3.5", *overrides])  # as the benchmark runs it
        check_config(cfg)
        assert cfg.model.hidden_size == 256, name  # every lever is measured on model=small

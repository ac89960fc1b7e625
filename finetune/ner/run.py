"""What ``run_finetune.py`` does, step by step, as functions that tests can call one by one.

checks -> task files -> encoder + tokenizer -> DataModule -> NerModule -> Trainer ->
fit -> final validation (best checkpoint) -> report, confusion matrix, predictions
-> NER export (what ``python -m finetune.predict`` loads) -> MLflow artifacts.

Where the encoder comes from (``pretrained=`` and ``finetune.init``): see
:mod:`finetune.job_setup`, shared with the classification tasks.

Runs log to the same MLflow store as pretraining, experiment ``bert-lm-klue-ner``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from bert_lm.models.bert import BertConfig
from bert_lm.training.run_support import (
    CHECKPOINT_DIR,
    ConfigError,
    build_logger,
    build_trainer,
    check_writable,
    log_config_params,
)
from finetune.job_setup import EncoderChoice, build_encoder, check_job_config, record_encoder, resolve_init
from finetune.ner.data import KlueNerDataModule, check_labels, window_size
from finetune.ner.download import download_klue_ner, find_local_files
from finetune.ner.export import NER_EXPORT_DIR, load_ner_export, save_ner_export
from finetune.ner.klue_ner import NerSentence, format_klue_ner, read_klue_ner
from finetune.ner.metrics import klue_ner_metrics, plot_entity_confusion
from finetune.ner.module import HEADS, NerEvaluation, NerModule
from finetune.ner.outputs import (
    CONFUSION_PNG,
    EVAL_FILE_KEY,
    LABELS_KEY,
    PREDICTIONS_TSV,
    REPORT_JSON,
    REPORT_TEXT,
    TEST_FILE_KEY,
    TEST_PREDICTIONS_TSV,
    TEST_REPORT_JSON,
)

log = logging.getLogger(__name__)

# (train, eval) file names tried in task.data_dir when task.train_file/eval_file are unset.
TASK_FILE_NAMES = (
    ("klue-ner-sample-train.tsv", "klue-ner-sample-dev.tsv"),
    ("klue-ner-v1.1_split-train.tsv", "klue-ner-v1.1_split-dev.tsv"),
    ("klue-ner-v1.1_train.tsv", "klue-ner-v1.1_dev.tsv"),
)


# --------------------------------------------------------------------------- checks
def check_finetune_config(cfg: DictConfig) -> None:
    """Fail fast, naming the key, on settings that would only fail later."""
    check_job_config(cfg)
    if cfg.finetune.head not in HEADS:
        raise ConfigError(f"finetune.head={cfg.finetune.head!r}: use one of {HEADS}")
    try:
        check_labels(list(cfg.task.labels))
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if cfg.task.max_len < 8:
        raise ConfigError(f"task.max_len={cfg.task.max_len}: must be at least 8")
    try:
        window_size(cfg.task.max_len, cfg.task.stride)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if not cfg.pretrained and cfg.task.max_len > cfg.model.max_position_embeddings:
        raise ConfigError(
            f"task.max_len={cfg.task.max_len} is above model.max_position_embeddings="
            f"{cfg.model.max_position_embeddings}"
        )


# --------------------------------------------------------------------------- steps
def resolve_task_files(task_cfg: DictConfig) -> dict[str, Path]:
    """``{"train": path, "eval": path}``: downloaded (``task.download``), named
    (``task.train_file``/``eval_file``) or found in ``task.data_dir``."""
    if task_cfg.download:
        paths = download_klue_ner(task_cfg.download_dir, ("train", "dev"))
        return {"train": paths["train"], "eval": paths["dev"]}
    if task_cfg.train_file or task_cfg.eval_file:
        if not (task_cfg.train_file and task_cfg.eval_file):
            raise ConfigError("set both task.train_file and task.eval_file (or neither, to use the known names)")
        return find_local_files(task_cfg.data_dir, {"train": task_cfg.train_file, "eval": task_cfg.eval_file})
    data_dir = Path(task_cfg.data_dir).expanduser()
    for train_name, eval_name in TASK_FILE_NAMES:
        if (data_dir / train_name).is_file() and (data_dir / eval_name).is_file():
            return {"train": data_dir / train_name, "eval": data_dir / eval_name}
    known = "; ".join(f"{t} + {e}" for t, e in TASK_FILE_NAMES)
    raise FileNotFoundError(
        f"task.data_dir={data_dir} holds none of the KLUE NER file pairs ({known}); name yours with "
        "task.train_file=... task.eval_file=..., or pass task.download=true to fetch the official files"
    )


def build_datamodule(cfg: DictConfig, files: dict[str, Path], tokenizer_dir: Path) -> KlueNerDataModule:
    return KlueNerDataModule(
        train_file=files["train"],
        eval_file=files["eval"],
        tokenizer_dir=tokenizer_dir,
        labels=list(cfg.task.labels),
        max_len=cfg.task.max_len,
        stride=cfg.task.stride,
        batch_size=cfg.task.batch_size,
        eval_batch_size=cfg.task.eval_batch_size,
        num_workers=cfg.impl.num_workers,
        pin_memory=cfg.impl.pin_memory,
        pad_to_multiple_of=cfg.impl.pad_to_multiple_of,
        group_by_length=cfg.task.group_by_length,
        seed=cfg.seed,
    )


def build_module(cfg: DictConfig, encoder: EncoderChoice) -> NerModule:
    settings = OmegaConf.to_container(cfg.finetune, resolve=True)
    settings.pop("init")
    settings.pop("encoder_dropout")  # in encoder.config already (build_encoder)
    for classification_only in ("pooler", "pooling"):
        settings.pop(classification_only, None)
    module = NerModule(encoder_config=encoder.config, labels=list(cfg.task.labels), **settings)
    if encoder.weights is not None:
        module.tagger.load_encoder_weights(encoder.weights)
    return module


# -------------------------------------------------------------------------- report
def format_entity_report(report: dict[str, dict[str, float]]) -> str:
    """seqeval's per-type dict as an aligned text table (types, then the averages)."""
    averages = [name for name in report if " avg" in name]
    types = sorted(name for name in report if name not in averages)
    lines = [f"{'type':<14}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}"]
    for name in [*types, *averages]:
        row = report[name]
        lines.append(
            f"{name:<14}{row['precision']:>10.4f}{row['recall']:>10.4f}{row['f1-score']:>10.4f}"
            f"{int(row['support']):>10d}"
        )
    return "\n".join(lines)


def write_report(
    evaluation: NerEvaluation, run_dir: Path, trained_steps: int, eval_file: Path, labels: list[str]
) -> list[Path]:
    """Per-type table (JSON + text), entity confusion PNG and the predicted tags in
    KLUE TSV format (for error analysis) in ``run_dir``; returns the paths. The report
    names the scored file and tag set, where ``finetune.compare`` finds the gold tags."""
    metrics = evaluation.metrics
    scores = {k: metrics[k] for k in ("entity_macro_f1", "entity_micro_f1", "char_macro_f1")}
    table = format_entity_report(metrics["report"])
    summary = "\n".join(f"{k}: {v:.4f}" for k, v in scores.items())
    text = f"{table}\n\n{summary}\nsentences: {len(evaluation.texts)} (skipped {evaluation.skipped})\n"
    (run_dir / REPORT_TEXT).write_text(text, encoding="utf-8")
    report = {
        **scores,
        "sentences": len(evaluation.texts),
        "skipped": evaluation.skipped,
        "trained_steps": trained_steps,
        EVAL_FILE_KEY: str(Path(eval_file).resolve()),
        LABELS_KEY: list(labels),
        "per_type": metrics["report"],
        "confusion": metrics["confusion"].as_dict(),
    }
    (run_dir / REPORT_JSON).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    png = plot_entity_confusion(metrics["confusion"], run_dir / CONFUSION_PNG)
    predicted = [
        NerSentence(i, t, p) for i, t, p in zip(evaluation.ids, evaluation.texts, evaluation.pred, strict=True)
    ]
    (run_dir / PREDICTIONS_TSV).write_text(format_klue_ner(predicted), encoding="utf-8")
    return [run_dir / REPORT_JSON, run_dir / REPORT_TEXT, png, run_dir / PREDICTIONS_TSV]


def log_artifacts(logger, cfg: DictConfig, run_dir: Path, report_files: list[Path], export_dir: Path) -> None:
    client, run_id = logger.experiment, logger.run_id
    resolved = run_dir / "resolved_config.yaml"
    OmegaConf.save(cfg, resolved, resolve=True)
    for path in [resolved, *report_files]:
        client.log_artifact(run_id, str(path))
    client.log_artifacts(run_id, str(export_dir), NER_EXPORT_DIR)


# ------------------------------------------------------------------------- the job
def finetune(cfg: DictConfig, overrides: list[str]) -> tuple[Path, dict[str, float]]:
    """The whole job; returns (run directory, evaluation scores)."""
    check_finetune_config(cfg)
    init = resolve_init(cfg)
    run_dir = Path(cfg.paths.output_dir)
    check_writable(run_dir, "paths.output_dir")
    check_writable(cfg.paths.cache_dir, "paths.cache_dir")
    if cfg.pretrained and any(o.startswith(("model=", "model.")) for o in overrides):
        log.warning("pretrained= is set: the encoder's architecture comes from it, the model group is unused")
    torch.set_float32_matmul_precision(cfg.impl.matmul_precision)
    pl.seed_everything(cfg.seed, workers=True)

    files = resolve_task_files(cfg.task)
    print(f"task: train {files['train']}, eval {files['eval']}")
    encoder = build_encoder(cfg, init, files["train"])
    print(f"encoder: {encoder.description}")
    positions = BertConfig(**encoder.config).max_sequence_length
    if cfg.task.max_len > positions:
        raise ConfigError(
            f"task.max_len={cfg.task.max_len} is above the {positions} positions the encoder allows "
            f"(max_position_embeddings={encoder.config['max_position_embeddings']}): lower task.max_len"
        )
    datamodule = build_datamodule(cfg, files, encoder.tokenizer_dir)
    module = build_module(cfg, encoder)

    cfg.finetune.init = init  # the resolved choice is what the params record
    logger = build_logger(cfg, run_dir, overrides)
    record_encoder(cfg, encoder)
    log_config_params(logger, cfg)
    logger.experiment.set_tag(logger.run_id, "encoder", encoder.description[:5000])
    trainer = build_trainer(cfg, logger, run_dir / CHECKPOINT_DIR)
    trainer.fit(module, datamodule=datamodule)
    trained_steps = trainer.global_step
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    # Score (and export) the best checkpoint's weights; the current ones without a checkpoint.
    trainer.validate(module, datamodule=datamodule, ckpt_path=best or None, weights_only=True)
    evaluation = module.last_evaluation
    if evaluation is None:
        raise RuntimeError("the final validation scored nothing: check trainer.limit_val_batches")

    print(format_entity_report(evaluation.metrics["report"]))
    report_files = write_report(evaluation, run_dir, trained_steps, files["eval"], list(cfg.task.labels))
    export_dir = save_ner_export(
        module.tagger, encoder.tokenizer_dir, run_dir / NER_EXPORT_DIR, max_len=cfg.task.max_len, stride=cfg.task.stride
    )
    scores = {k: float(evaluation.metrics[k]) for k in ("entity_macro_f1", "entity_micro_f1", "char_macro_f1")}
    if cfg.task.test_file:
        test_scores, test_files = score_test_file(cfg, export_dir, run_dir)
        report_files += test_files
        scores.update(test_scores)
        logger.log_metrics({f"test/{k.removeprefix('test_')}": v for k, v in test_scores.items()})
    if trainer.is_global_zero:
        log_artifacts(logger, cfg, run_dir, report_files, export_dir)
    return run_dir, scores


def score_test_file(cfg: DictConfig, export_dir: Path, run_dir: Path) -> tuple[dict[str, float], list[Path]]:
    """The test file, scored once with the selected model as exported (never used for selection)."""
    path = Path(cfg.task.test_file).expanduser()
    if not path.is_absolute():
        path = Path(cfg.task.data_dir).expanduser() / path
    if not path.is_file():
        raise FileNotFoundError(f"task.test_file: {path} does not exist")
    sentences = read_klue_ner(path, list(cfg.task.labels))
    predicted = load_ner_export(export_dir).char_tags([s.text for s in sentences])
    metrics = klue_ner_metrics(
        [s.text for s in sentences], [s.tags for s in sentences], predicted, list(cfg.task.labels)
    )
    print("test file:\n" + format_entity_report(metrics["report"]))
    scores = {f"test_{k}": float(metrics[k]) for k in ("entity_macro_f1", "entity_micro_f1", "char_macro_f1")}
    report = run_dir / TEST_REPORT_JSON
    content = {
        **scores,
        TEST_FILE_KEY: str(path.resolve()),
        LABELS_KEY: list(cfg.task.labels),
        "per_type": metrics["report"],
    }
    report.write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tsv = run_dir / TEST_PREDICTIONS_TSV
    tsv.write_text(
        format_klue_ner([NerSentence(s.id, s.text, p) for s, p in zip(sentences, predicted, strict=True)]),
        encoding="utf-8",
    )
    return scores, [report, tsv]

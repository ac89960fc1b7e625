"""What ``run_finetune.py task=hate_speech|nsmc|klue_nli|classification`` does, step by step.

checks -> labelled files (+ augmented rows) -> label order -> encoder + tokenizer ->
DataModule -> ClassificationModule -> Trainer -> fit (model selection on
``task.eval_file`` by ``val/macro_f1``) -> final validation of the selected
checkpoint -> report, confusion matrix, every prediction -> export -> the test file,
scored once with the selected model (``task.test_file``) -> MLflow.

The encoder comes from ``pretrained=`` exactly as for NER (our run directory, a
``.ckpt``, our HF export, or a published BERT / RoBERTa / ELECTRA directory); see
:mod:`finetune.ner.run` for ``finetune.init`` and the no-pretraining baseline.
"""

from __future__ import annotations

import json
import logging
import random
from collections import Counter
from pathlib import Path

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from bert_lm.models.bert import BertConfig
from bert_lm.training.encoder_loading import pooler_was_trained
from bert_lm.training.run_support import (
    CHECKPOINT_DIR,
    ConfigError,
    build_logger,
    build_trainer,
    check_writable,
    log_config_params,
)
from finetune.classification.data import (
    ClassificationDataModule,
    ClassificationFormatError,
    LabelledText,
    label_ids,
    label_order,
    read_labelled,
)
from finetune.classification.export import (
    CLASSIFICATION_EXPORT_DIR,
    load_classification_export,
    save_classification_export,
)
from finetune.classification.metrics import (
    classification_scores,
    format_classification_report,
    plot_confusion_matrix,
)
from finetune.classification.module import POOLING_CHOICES, ClassificationEvaluation, ClassificationModule
from finetune.classification.outputs import (
    CONFUSION_PNG,
    PREDICTIONS_TSV,
    REPORT_JSON,
    REPORT_TEXT,
    TEST_CONFUSION_PNG,
    TEST_PREDICTIONS_TSV,
    TEST_REPORT_JSON,
    write_predictions,
)
from finetune.job_setup import build_encoder, check_job_config, record_encoder, resolve_init

log = logging.getLogger(__name__)

POOLER_CHOICES = ("auto", "true", "false")


# --------------------------------------------------------------------------- checks
def check_classification_config(cfg: DictConfig) -> None:
    check_job_config(cfg)
    if cfg.task.max_len < 8:
        raise ConfigError(f"task.max_len={cfg.task.max_len}: must be at least 8")
    if str(cfg.finetune.pooler).lower() not in POOLER_CHOICES:
        raise ConfigError(f"finetune.pooler={cfg.finetune.pooler!r}: use one of {POOLER_CHOICES}")
    if cfg.finetune.pooling not in POOLING_CHOICES:
        raise ConfigError(f"finetune.pooling={cfg.finetune.pooling!r}: use one of {POOLING_CHOICES}")
    if cfg.finetune.pooling != "cls" and str(cfg.finetune.pooler).lower() == "true":
        raise ConfigError(
            f"finetune.pooler=true reads the [CLS] vector, finetune.pooling={cfg.finetune.pooling} does not: "
            "drop finetune.pooler=true or use finetune.pooling=cls"
        )
    weights = cfg.task.class_weights
    if weights is not None and weights != "balanced" and not OmegaConf.is_list(weights):
        raise ConfigError(f"task.class_weights={weights!r}: use null, balanced, or one weight per label")
    if cfg.task.eval_file is None and not 0.0 < cfg.task.eval_ratio < 1.0:
        raise ConfigError("task.eval_file=null needs task.eval_ratio in (0, 1): the share of train rows held out")


# --------------------------------------------------------------------------- files
def _path(task_cfg: DictConfig, name: str | None) -> Path | None:
    if not name:
        return None
    path = Path(name).expanduser()
    return path if path.is_absolute() else Path(task_cfg.data_dir).expanduser() / path


def resolve_files(task_cfg: DictConfig) -> dict[str, Path | None]:
    """``{"train", "eval", "test"}`` paths: downloaded (``task.download``) or named in ``task.data_dir``."""
    if task_cfg.download:
        from finetune.classification.download import download_korean_hate_speech, download_nsmc

        if task_cfg.name == "hate_speech":
            paths = download_korean_hate_speech(task_cfg.download_dir, ("train", "dev"))
            return {"train": paths["train"], "eval": paths["dev"], "test": _path(task_cfg, task_cfg.test_file)}
        if task_cfg.name == "nsmc":
            # NSMC publishes train and test only: evaluation rows are held out of train (task.eval_ratio).
            paths = download_nsmc(task_cfg.download_dir, ("train", "test"))
            return {"train": paths["train"], "eval": None, "test": paths["test"]}
        raise ConfigError(f"task.download=true: no public download for task {task_cfg.name!r}; set task.data_dir")
    files = {split: _path(task_cfg, task_cfg.get(f"{split}_file")) for split in ("train", "eval", "test")}
    if files["train"] is None:
        raise ConfigError("task.train_file is not set: name the labelled training file (relative to task.data_dir)")
    for split, path in files.items():
        if path is not None and not path.is_file():
            raise FileNotFoundError(
                f"task.{split}_file: {path} does not exist; set task.data_dir=<dir> and task.{split}_file=<name>"
                + (", or task.download=true" if task_cfg.name in ("hate_speech", "nsmc") else "")
            )
    return files


def read_task_rows(task_cfg: DictConfig, path: Path) -> list[LabelledText]:
    return read_labelled(
        path,
        task_cfg.text_column,
        task_cfg.label_column,
        task_cfg.text_pair_column,
        task_cfg.format,
        skip_empty_text=task_cfg.skip_empty_text,
    )


def hold_out(rows: list[LabelledText], ratio: float, seed: int) -> tuple[list[LabelledText], list[LabelledText]]:
    """(train, eval): a seeded share of the training rows held out for model selection."""
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    cut = max(1, round(ratio * len(rows)))
    held = set(order[:cut])
    return [r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held]


def class_weights_for(setting, train_rows: list[LabelledText], labels: list[str]) -> list[float] | None:
    """``balanced``: n / (k * count), scikit-learn's ``compute_class_weight`` rule."""
    if setting is None:
        return None
    if setting == "balanced":
        counts = Counter(r.label for r in train_rows)
        return [len(train_rows) / (len(labels) * max(1, counts[label])) for label in labels]
    return [float(w) for w in setting]


# -------------------------------------------------------------------------- report
def write_report(run_dir: Path, scores: dict, labels, name: str, trained_steps: int, prefix: str = "") -> list[Path]:
    json_path = run_dir / (TEST_REPORT_JSON if prefix else REPORT_JSON)
    json_path.write_text(
        json.dumps({**scores, "labels": list(labels), "trained_steps": trained_steps}, indent=2, ensure_ascii=False)
        + "\n",
        encoding="utf-8",
    )
    paths = [json_path]
    if not prefix:
        (run_dir / REPORT_TEXT).write_text(format_classification_report(scores) + "\n", encoding="utf-8")
        paths.append(run_dir / REPORT_TEXT)
    png = run_dir / (TEST_CONFUSION_PNG if prefix else CONFUSION_PNG)
    what = "test file" if prefix else "evaluation file"
    paths.append(plot_confusion_matrix(scores["confusion"], labels, png, f"{name}: {what} confusion"))
    return paths


# ------------------------------------------------------------------------- the job
def finetune_classification(cfg: DictConfig, overrides: list[str]) -> tuple[Path, dict[str, float]]:
    """The whole job; returns (run directory, scores: macro_f1 and accuracy on the evaluation
    file, and test_macro_f1 / test_accuracy when task.test_file is set)."""
    check_classification_config(cfg)
    init = resolve_init(cfg)
    run_dir = Path(cfg.paths.output_dir)
    check_writable(run_dir, "paths.output_dir")
    check_writable(cfg.paths.cache_dir, "paths.cache_dir")
    torch.set_float32_matmul_precision(cfg.impl.matmul_precision)
    pl.seed_everything(cfg.seed, workers=True)

    task = cfg.task
    files = resolve_files(task)
    train_rows = read_task_rows(task, files["train"])
    if files["eval"] is None:
        train_rows, eval_rows = hold_out(train_rows, task.eval_ratio, cfg.seed)
        eval_source = f"{len(eval_rows)} rows held out of {files['train']} (task.eval_ratio={task.eval_ratio})"
    else:
        eval_rows = read_task_rows(task, files["eval"])
        eval_source = str(files["eval"])
    original_rows = len(train_rows)
    if task.augment_file:
        # Augmented rows keep the label columns of their source; they join training only.
        train_rows += read_task_rows(task, _path(task, task.augment_file))
    labels = label_order(train_rows, task.labels)
    label_ids(eval_rows, labels)  # fail now, naming the row, on a label training never saw
    print(
        f"task {task.name}: train {files['train']} ({original_rows} rows"
        + (f" + {len(train_rows) - original_rows} augmented" if task.augment_file else "")
        + f"), eval {eval_source}, test {files['test'] or 'none'}; labels {labels}"
    )

    encoder = build_encoder(cfg, init, files["train"], lambda: [r.text for r in train_rows])
    print(f"encoder: {encoder.description}")
    config = BertConfig(**encoder.config)
    if task.max_len > config.max_sequence_length:
        raise ConfigError(
            f"task.max_len={task.max_len} is above the {config.max_sequence_length} positions the encoder allows "
            f"(max_position_embeddings={config.max_position_embeddings}): lower task.max_len"
        )
    pooler_setting = str(cfg.finetune.pooler).lower()
    if cfg.finetune.pooling != "cls":
        use_pooler = False  # the pooler reads [CLS] only
    elif pooler_setting == "auto":
        use_pooler = (
            bool(cfg.pretrained) and init == "pretrained" and pooler_was_trained(cfg.pretrained, cfg.tokenizer.dir)
        )
    else:
        use_pooler = pooler_setting == "true"
    datamodule = ClassificationDataModule(
        train_rows,
        eval_rows,
        labels,
        encoder.tokenizer_dir,
        max_len=task.max_len,
        use_token_types=config.type_vocab_size > 1,
        batch_size=task.batch_size,
        eval_batch_size=task.eval_batch_size,
        num_workers=cfg.impl.num_workers,
        pin_memory=cfg.impl.pin_memory,
        pad_to_multiple_of=cfg.impl.pad_to_multiple_of,
    )
    settings = OmegaConf.to_container(cfg.finetune, resolve=True)
    # NER-only, or resolved above (encoder_dropout is in encoder.config already).
    for unused in ("init", "pooler", "head", "constrained_transitions", "encoder_dropout"):
        settings.pop(unused, None)
    module = ClassificationModule(
        encoder_config=encoder.config,
        labels=labels,
        use_pooler=use_pooler,
        class_weights=class_weights_for(task.class_weights, train_rows, labels),
        **settings,
    )
    if encoder.weights is not None:
        module.classifier.load_encoder_weights(encoder.weights)

    cfg.finetune.init = init  # the resolved choices are what the params record
    cfg.finetune.pooler = str(use_pooler).lower()
    logger = build_logger(cfg, run_dir, overrides)
    record_encoder(cfg, encoder)
    log_config_params(logger, cfg)
    logger.experiment.set_tag(logger.run_id, "encoder", encoder.description[:5000])
    trainer = build_trainer(cfg, logger, run_dir / CHECKPOINT_DIR)
    trainer.fit(module, datamodule=datamodule)
    trained_steps = trainer.global_step
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    trainer.validate(module, datamodule=datamodule, ckpt_path=best or None, weights_only=True)
    evaluation: ClassificationEvaluation | None = module.last_evaluation
    if evaluation is None:
        raise RuntimeError("the final validation scored nothing: check trainer.limit_val_batches")

    scores = classification_scores(evaluation.gold, evaluation.pred, labels)
    print(format_classification_report(scores))
    artifacts = write_report(run_dir, scores, labels, task.name, trained_steps)
    artifacts.append(
        write_predictions(
            run_dir / PREDICTIONS_TSV, eval_rows, labels, evaluation.gold, evaluation.pred, evaluation.probabilities
        )
    )
    export_dir = save_classification_export(
        module.classifier,
        encoder.tokenizer_dir,
        run_dir / CLASSIFICATION_EXPORT_DIR,
        max_len=task.max_len,
        pairs=bool(task.text_pair_column),
    )
    results = {"macro_f1": scores["macro_f1"], "accuracy": scores["accuracy"]}

    if files["test"] is not None:
        # Scored once, with the selected model as exported: the figure to report.
        test_rows = read_task_rows(task, files["test"])
        try:
            test_gold = label_ids(test_rows, labels)
        except ClassificationFormatError as err:
            raise ClassificationFormatError(f"task.test_file: {err}") from None
        predictor = load_classification_export(export_dir)
        pairs = [r.text_pair for r in test_rows] if task.text_pair_column else None
        probabilities = predictor.probabilities([r.text for r in test_rows], pairs)
        test_pred = [max(range(len(p)), key=p.__getitem__) for p in probabilities]
        test_scores = classification_scores(test_gold, test_pred, labels)
        print("test file:\n" + format_classification_report(test_scores))
        artifacts += write_report(run_dir, test_scores, labels, task.name, trained_steps, prefix="test_")
        artifacts.append(
            write_predictions(run_dir / TEST_PREDICTIONS_TSV, test_rows, labels, test_gold, test_pred, probabilities)
        )
        results.update(test_macro_f1=test_scores["macro_f1"], test_accuracy=test_scores["accuracy"])
        logger.log_metrics({"test/macro_f1": results["test_macro_f1"], "test/accuracy": results["test_accuracy"]})

    if trainer.is_global_zero:
        client, run_id = logger.experiment, logger.run_id
        resolved = run_dir / "resolved_config.yaml"
        OmegaConf.save(cfg, resolved, resolve=True)
        for path in [resolved, *artifacts]:
            client.log_artifact(run_id, str(path))
        client.log_artifacts(run_id, str(export_dir), CLASSIFICATION_EXPORT_DIR)
    return run_dir, results

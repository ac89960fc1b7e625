"""Export a pretraining run that stopped before its export (wall-time limit, preemption, Ctrl-C).

    python -m bert_lm.export <run dir | .ckpt> [--out DIR] [--tokenizer DIR]

A run directory exports the checkpoint ``run.py`` would have exported (the best one its
``ModelCheckpoint`` recorded, else ``last.ckpt``); a ``.ckpt`` exports that one. The export
goes to ``<run>/hf_export`` (refused if one is there: pass ``--out``), in the layout ``run.py``
writes: ``config.json`` + ``model.safetensors`` + the tokenizer, or ``discriminator/`` and
``generator/`` for an ELECTRA run. When the run directory names its MLflow run, the export is
logged there as ``hf_export`` artifacts (tag ``exported_from``) unless it holds some already (pass
``--tracking-uri`` when the run logged to another store than the project's). Prints
``hf_export: <dir>`` last, as ``run.py`` does: what finetuning, ``evaluate`` and fill-mask take.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bert_lm.tracking import DEFAULT_TRACKING_URI, run_id_of
from bert_lm.training.checkpoint_export import default_export_dir, export_checkpoint, run_tokenizer
from bert_lm.training.run_support import HF_EXPORT_DIR, best_checkpoint, run_dir_of


def log_export(run_dir: Path, export_dir: Path, checkpoint: Path, tracking_uri: str) -> str:
    """Attach the export to the run's MLflow run as run.py would have: only the run's own
    ``hf_export/`` of the checkpoint run.py exports, and only when the MLflow run holds no
    ``hf_export/`` yet (artifacts are never overwritten). The export on disk is complete before
    this runs, so a store that fails here is reported, not raised. Returns what was done."""
    if export_dir != run_dir / HF_EXPORT_DIR:
        return f"not logged to MLflow: only the run's own {HF_EXPORT_DIR}/ is (this one went to --out)"
    chosen, _ = best_checkpoint(run_dir)
    if checkpoint != chosen:
        return f"not logged to MLflow: {checkpoint.name} is not the checkpoint run.py exports ({chosen.name})"
    run_id = run_id_of(run_dir)
    if run_id is None:
        return f"not logged to MLflow: {run_dir} names no MLflow run"
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri)
    try:
        client.get_run(run_id)
    except MlflowException:
        return f"not logged to MLflow: run {run_id} is not in {tracking_uri} (pass the run's --tracking-uri)"
    try:
        if client.list_artifacts(run_id, HF_EXPORT_DIR):
            return f"not logged to MLflow: run {run_id} already holds {HF_EXPORT_DIR}/ artifacts"
        client.log_artifacts(run_id, str(export_dir), HF_EXPORT_DIR)
        client.set_tag(run_id, "exported_from", checkpoint.name)
    except (MlflowException, OSError) as err:
        return f"not logged to MLflow (the export on disk is complete): {type(err).__name__}: {err}"
    return f"logged to MLflow run {run_id} ({tracking_uri}) as {HF_EXPORT_DIR}/"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="a run.py run directory, or one of its .ckpt files")
    parser.add_argument("--out", type=Path, default=None, help="default: <run dir>/hf_export")
    parser.add_argument("--tokenizer", default=None, help="default: the run's own copy, <run dir>/tokenizer")
    parser.add_argument("--tracking-uri", default=DEFAULT_TRACKING_URI, help="MLflow store (default: the project's)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    source = args.source.expanduser().resolve()
    try:
        if not source.exists():
            raise FileNotFoundError(f"{source} does not exist: pass a run directory (run_dir: in run.py's output)")
        checkpoint, why = (source, "as given") if source.suffix == ".ckpt" else best_checkpoint(source)
        out_dir = (args.out or default_export_dir(checkpoint)).expanduser().resolve()
        tokenizer_dir = run_tokenizer(checkpoint, args.tokenizer)
        print(f"checkpoint: {checkpoint} ({why})")
        print(f"tokenizer: {tokenizer_dir}")
        export_checkpoint(checkpoint, out_dir, tokenizer_dir)
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(log_export(run_dir_of(checkpoint), out_dir, checkpoint, args.tracking_uri))
    print(f"hf_export: {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What every entry point needs before Hydra composes a config.

* the ``project_root`` resolver, so paths default to the project, not the shell's
  current directory;
* the structured-config schemas;
* :func:`check_overrides`, which composes the config once before ``@hydra.main``
  and, for an unknown key, prints the valid keys instead of Hydra's bare message.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from bert_lm.config.schema import explain_config_error, register_schemas

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = PROJECT_ROOT / "conf"
# Set by a job for the DDP worker processes Lightning starts: that job's exact
# overrides and run directory.
DDP_JOB_ENV = "BERT_LM_DDP_JOB"


def setup_hydra() -> None:
    if not OmegaConf.has_resolver("project_root"):
        OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT))
    if not OmegaConf.has_resolver("monitored_metric"):
        # The checkpoint metric follows the objectives: MLM loss, or NSP loss alone.
        OmegaConf.register_new_resolver(
            "monitored_metric",
            lambda mlm, objective="mlm": "val/disc_loss"
            if objective == "electra"
            else ("val/mlm_loss" if mlm else "val/nsp_loss"),
        )
    register_schemas()


def check_overrides(
    overrides: list[str],
    config_name: str = "config",
    setup: Callable[[], None] | None = None,
    explain: Callable[[str], str | None] = explain_config_error,
) -> None:
    """Exit with a clear message if the (non-sweep) overrides do not compose.

    ``setup`` registers resolvers and schemas (default :func:`setup_hydra`);
    ``explain`` turns a composition error into that message, or None."""
    (setup or setup_hydra)()
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception:
        return  # Hydra reports syntax errors itself
    plain = [o.input_line for o in parsed if not o.is_sweep_override() and not o.key_or_group.startswith("hydra")]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            compose(config_name=config_name, overrides=plain)
    except Exception as err:  # composition errors come in several Hydra/OmegaConf types
        message = f"{err}\n{err.__cause__ or ''}"
        explained = explain(message) or _explain_top_level_key(message, config_name)
        if explained:
            print(f"config error: {explained}", file=sys.stderr)
            sys.exit(2)
    finally:
        GlobalHydra.instance().clear()


def _explain_top_level_key(message: str, config_name: str) -> str | None:
    """An unknown key at the top of the config (``pretrianed=``, ``seeed=``): Hydra's own message
    advises ``+key=``, which adds a key nothing reads (a typo of ``pretrained`` would then
    finetune a random encoder). Name the top-level keys and groups instead."""
    match = re.search(r"Key '([^'.]+)' is not in struct\s+full_key: ([^\s.]+)\s", message + "\n")
    if not match:
        return None
    bad_key = match.group(1)
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        valid = [key for key in compose(config_name=config_name).keys() if key != "hydra"]
    close = difflib.get_close_matches(bad_key, valid, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return f"unknown config key '{bad_key}'.{hint} Top-level keys and groups: {', '.join(valid)}."


def export_job_for_ddp_workers(overrides: list[str], run_dir: str) -> None:
    """Record this job's overrides for the worker processes Lightning's DDP starts."""
    os.environ[DDP_JOB_ENV] = json.dumps({"overrides": list(overrides), "run_dir": str(run_dir)})


def argv_for_ddp_worker(argv: list[str]) -> list[str]:
    """The command line a DDP worker process should run with.

    Lightning's DDP launcher starts ranks 1.. by re-running the script with the
    parent's original arguments. Under ``-m`` (a sweep) that would start a whole
    new sweep inside one job, and the worker would not know which combination it
    belongs to. A worker (LOCAL_RANK set, job recorded by its parent) therefore
    runs exactly its parent job's overrides, in its run directory, without ``-m``;
    Lightning's own job-name and output-subdir arguments are kept.
    """
    job = os.environ.get(DDP_JOB_ENV)
    if not job or "LOCAL_RANK" not in os.environ:
        return argv
    job = json.loads(job)
    lightning_args = [a for a in argv[1:] if a.startswith(("hydra.job.name=", "hydra.output_subdir="))]
    return [argv[0], *job["overrides"], f"hydra.run.dir={job['run_dir']}", *lightning_args]


@contextlib.contextmanager
def isolated_job_environment():
    """Give each job of a sweep the environment the sweep started with.

    Lightning's DDP launcher sets LOCAL_RANK, MASTER_PORT, WORLD_SIZE... in the
    launching process. In the next job of a multirun (same process) LOCAL_RANK
    would make Lightning believe an external launcher created the ranks, and it
    would wait for workers that never start. The process group goes too.
    """
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()

"""What every entry point needs before Hydra composes a config.

* the ``project_root`` resolver, so paths default to the project, not the shell's
  current directory;
* the structured-config schemas;
* :func:`check_overrides`, which composes the config once before ``@hydra.main``
  and, for an unknown key, prints the valid keys instead of Hydra's bare message.
"""

from __future__ import annotations

import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from bert_lm.config_schema import explain_config_error, register_schemas

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = PROJECT_ROOT / "conf"


def setup_hydra() -> None:
    if not OmegaConf.has_resolver("project_root"):
        OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT))
    if not OmegaConf.has_resolver("monitored_metric"):
        # The checkpoint metric follows the objectives: MLM loss, or NSP loss alone.
        OmegaConf.register_new_resolver("monitored_metric", lambda mlm: "val/mlm_loss" if mlm else "val/nsp_loss")
    register_schemas()


def check_overrides(overrides: list[str], config_name: str = "config") -> None:
    """Exit with a clear message if the (non-sweep) overrides do not compose."""
    setup_hydra()
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
        text = f"{err}\n{err.__cause__ or ''}"
        explained = explain_config_error(text)
        if explained:
            print(f"config error: {explained}", file=sys.stderr)
            sys.exit(2)
    finally:
        GlobalHydra.instance().clear()

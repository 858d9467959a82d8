"""Model directories: `config.json` + an orbax checkpoint of the variables (DESIGN §3, §9).

    DIR/config.json   {"model": "<module in jaxsep.models>", "model_kwargs": {...}, ...}
    DIR/variables/    orbax checkpoint of {"params": ..., plus "batch_stats" / "codebook" /
                      "pca" / "embedding" (a Concat X-UMX's frozen VGGish) where the model has them}

`convert`, `train` and `separate` read and write this one format. Variables are saved as host
numpy arrays, so a directory loads on any device layout.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxsep.errors import JaxsepError, first_line
from jaxsep.models import build_model

CONFIG_FILE = "config.json"
VARIABLES_DIR = "variables"


@dataclasses.dataclass(frozen=True)
class Model:
    """A loaded model: the flax module, its variables and the directory's config."""

    module: Any
    variables: dict
    config: dict


def _sync(name: str) -> None:
    """Barrier across processes (no-op on one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def save_model_dir(path: str | Path, config: dict, variables: dict) -> Path:
    """Write a model directory atomically (temp dir + rename); replaces an existing one.

    Multi-process: every process calls it with the same arguments (orbax's save is collective);
    process 0 writes config.json and does the renames. Variables are fetched to the host, so
    they must be fully replicated (as the trainer keeps them).
    """
    path = Path(path).resolve()
    if not isinstance(config.get("model"), str):
        raise JaxsepError(f"{path}: config needs a 'model' name (a module in jaxsep.models)")
    try:
        config_text = json.dumps(config, indent=2, sort_keys=True)
    except TypeError as e:
        raise JaxsepError(f"{path}: config is not JSON-serialisable: {e}") from e
    host_variables = jax.tree.map(np.asarray, jax.device_get(variables))
    primary = jax.process_index() == 0
    # one name all processes agree on; a leftover from a crashed save is simply replaced
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        if primary:
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            (tmp / CONFIG_FILE).write_text(config_text + "\n")
        _sync("jaxsep_model_dir_begin")
        try:
            with ocp.StandardCheckpointer() as checkpointer:
                checkpointer.save(tmp / VARIABLES_DIR, host_variables)
                checkpointer.wait_until_finished()
        except Exception as e:  # orbax raises many types for leaves it cannot write
            raise JaxsepError(f"{path}: cannot save variables ({first_line(e)})") from e
        if primary:
            old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
            if path.exists():
                path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old, ignore_errors=True)
        _sync("jaxsep_model_dir_end")
    finally:
        if primary:
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def read_config(path: str | Path) -> dict:
    """The directory's config.json, with one-line errors for what is missing or malformed."""
    path = Path(path)
    if not path.is_dir():
        raise JaxsepError(f"{path}: model directory not found")
    config_path = path / CONFIG_FILE
    if not config_path.is_file():
        raise JaxsepError(f"{path}: no {CONFIG_FILE} (not a model directory)")
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise JaxsepError(f"{config_path}: invalid JSON ({e})") from e
    if not isinstance(config, dict) or not isinstance(config.get("model"), str):
        raise JaxsepError(f"{config_path}: needs a 'model' name (a module in jaxsep.models)")
    if not isinstance(config.get("model_kwargs", {}), dict):
        raise JaxsepError(f"{config_path}: 'model_kwargs' must be an object")
    return config


def load(path: str | Path) -> Model:
    """Load a model directory written by `convert` or `train`."""
    path = Path(path)
    config = read_config(path)
    try:
        module = build_model(config["model"], **config.get("model_kwargs", {}))
    except JaxsepError as e:
        raise JaxsepError(f"{path / CONFIG_FILE}: {e}") from e
    variables = load_variables(path)
    return Model(module=module, variables=variables, config=config)


def load_variables(path: str | Path) -> dict:
    """The variables of a model directory as host numpy arrays (no model lookup)."""
    variables_path = (Path(path) / VARIABLES_DIR).resolve()
    if not variables_path.is_dir():
        raise JaxsepError(f"{path}: no {VARIABLES_DIR}/ checkpoint")
    try:
        with ocp.StandardCheckpointer() as checkpointer:
            return checkpointer.restore(variables_path)
    except Exception as e:  # orbax/tensorstore raise many types for damaged files
        raise JaxsepError(
            f"{variables_path}: corrupt or unreadable checkpoint ({first_line(e)})"
        ) from e

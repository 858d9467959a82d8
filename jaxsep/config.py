"""Load `configs/*.py` files the big_vision way: `path[:arg]` plus `--config.key=value` overrides."""

from __future__ import annotations

import ast
import importlib.util
import json
from pathlib import Path
from typing import Any

import ml_collections

from jaxsep.errors import JaxsepError


def load_config(
    spec: str, overrides: list[str] | tuple[str, ...] = ()
) -> ml_collections.ConfigDict:
    """Build a ConfigDict from `configs/name.py[:arg]` and apply `key=value` overrides.

    The file must define `get_config(arg=None)`. Overrides are typed by the existing field (a new
    key is an error, so a typo never silently creates a field).
    """
    path_str, _, arg = spec.partition(":")
    path = Path(path_str)
    if not path.is_file():
        raise JaxsepError(f"{path}: config file not found")
    module_spec = importlib.util.spec_from_file_location(f"jaxsep_config_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as e:  # a config file is user code: report where it failed, in one line
        raise JaxsepError(f"{path}: cannot load config: {type(e).__name__}: {e}") from e
    if not hasattr(module, "get_config"):
        raise JaxsepError(f"{path}: config file defines no get_config(arg)")
    try:
        config = module.get_config(arg or None)
    except Exception as e:
        raise JaxsepError(f"{path}: get_config({arg!r}) failed: {type(e).__name__}: {e}") from e
    for item in overrides:
        apply_override(config, item, source=str(path))
    return config


def apply_override(config: ml_collections.ConfigDict, item: str, source: str = "config") -> None:
    """Set one dotted `key=value` on `config`, parsing the value to the field's current type."""
    key, sep, raw = item.partition("=")
    key = key.removeprefix("--").removeprefix("config.")
    if not sep:
        raise JaxsepError(f"{source}: override {item!r} is not of the form key=value")
    *parents, leaf = key.split(".")
    node = config
    for name in parents:
        if name not in node:
            raise JaxsepError(f"{source}: unknown config key {key!r}")
        node = node[name]
    if leaf not in node:
        raise JaxsepError(f"{source}: unknown config key {key!r}")
    node[leaf] = _parse_like(node[leaf], raw, key, source)


def _parse_like(current: Any, raw: str, key: str, source: str) -> Any:
    if isinstance(current, bool):
        if raw.lower() in ("1", "true", "yes"):
            return True
        if raw.lower() in ("0", "false", "no"):
            return False
        raise JaxsepError(f"{source}: {key} expects true/false, got {raw!r}")
    if isinstance(current, str) or current is None:
        return raw
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError) as e:
        raise JaxsepError(f"{source}: cannot parse {key}={raw!r}") from e
    if isinstance(current, float) and isinstance(value, int):
        value = float(value)
    if isinstance(current, (list, tuple)) and isinstance(value, (list, tuple)):
        return type(current)(value)
    if type(value) is not type(current):
        raise JaxsepError(f"{source}: {key} expects {type(current).__name__}, got {raw!r}")
    return value


def config_to_dict(config: ml_collections.ConfigDict) -> dict:
    """A JSON-safe plain dict (tuples become lists) for config.json and checkpoints."""
    return json.loads(config.to_json())

"""Recipes: each builds a model, its loss, its data and its evaluation from a config.

A recipe module `jaxsep.recipes.<config.recipe>` exposes `train(config, workdir)`; the CLI reaches
it through `train_recipe`, looked up by module name (big_vision style, no registry).
"""

from __future__ import annotations

import importlib
from pathlib import Path

import ml_collections

from jaxsep.errors import JaxsepError


def train_recipe(config: ml_collections.ConfigDict, workdir: Path) -> Path:
    """Run `config.recipe`'s trainer; returns the model directory it exported."""
    name = config.get("recipe")
    if not name:
        raise JaxsepError("config has no 'recipe' field naming a module in jaxsep.recipes")
    try:
        module = importlib.import_module(f"jaxsep.recipes.{name}")
    except ModuleNotFoundError as e:
        if e.name == f"jaxsep.recipes.{name}":
            raise JaxsepError(f"unknown recipe {name!r} (no module jaxsep.recipes.{name})") from e
        raise
    from jaxsep.train.loop import check_train_config

    check_train_config(config)  # before the recipe reads data or compiles anything
    return module.train(config, Path(workdir))

"""Flax models. Look one up by module name (big_vision style): `build_model("mask_mlp", ...)`.

Each model module `jaxsep/models/<name>.py` exports `Model`, the `flax.linen.Module` class (or a
factory) whose keyword arguments are the `model_kwargs` of a model directory's config.json.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from jaxsep.errors import JaxsepError


def available_models() -> list[str]:
    """Module names under jaxsep.models."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def build_model(name: str, **kwargs: Any):
    """`jaxsep.models.<name>.Model(**kwargs)`; unknown names and bad kwargs are JaxsepErrors."""
    if not isinstance(name, str) or not name.isidentifier():
        raise JaxsepError(f"unknown model {name!r} (available: {', '.join(available_models())})")
    try:
        module = importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as e:
        if e.name != f"{__name__}.{name}":
            raise  # the model module exists but one of its imports is missing
        raise JaxsepError(
            f"unknown model {name!r} (available: {', '.join(available_models())})"
        ) from e
    factory = getattr(module, "Model", None)
    if factory is None:
        raise JaxsepError(f"model module jaxsep.models.{name} defines no `Model`")
    try:
        return factory(**kwargs)
    except (TypeError, ValueError) as e:  # unknown kwargs; values a config class rejects
        raise JaxsepError(f"model {name!r}: bad model_kwargs: {e}") from e

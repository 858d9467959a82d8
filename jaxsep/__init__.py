"""jaxsep: JAX/Flax music source separation built for accelerator throughput."""

from __future__ import annotations

from typing import Any

from jaxsep.errors import JaxsepError

__version__ = "0.1.0"
__all__ = ["JaxsepError", "Separator", "__version__", "load"]


def __getattr__(name: str) -> Any:
    # `jaxsep.load` and `jaxsep.Separator` import jax/flax/orbax lazily, so `import jaxsep`
    # (and the CLI's -h) stays fast.
    if name == "load":
        from jaxsep.modeldir import load

        return load
    if name == "Separator":
        from jaxsep.separate import Separator

        return Separator
    raise AttributeError(f"module 'jaxsep' has no attribute {name!r}")

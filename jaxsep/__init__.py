"""jaxsep: JAX/Flax music source separation built for accelerator throughput."""

from jaxsep.errors import JaxsepError

__version__ = "0.1.0"
__all__ = ["JaxsepError", "__version__"]

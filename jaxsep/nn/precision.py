"""The models' ``dtype`` option: float32 everywhere, or bfloat16 activations (mixed precision).

With ``dtype="bfloat16"`` every matmul and convolution takes bfloat16 operands (activations, and
float32 parameters cast where they are used), which is what accelerators run at 2x the TF32 rate
and what halves the activation memory traffic. What stays float32, because bfloat16's 8-bit
mantissa would change the result rather than round it: the parameters, their gradients and the
optimizer, the LSTM gate arithmetic and cell state (errors would compound over hundreds of
steps), batch-norm statistics, the VQ codebook search, the STFT, and every loss.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxsep.errors import JaxsepError

COMPUTE_DTYPES = ("float32", "bfloat16")


def compute_dtype(value: Any, where: str = "model") -> jnp.dtype:
    """The dtype named by a model's ``dtype`` field (a name from config.json, or a dtype)."""
    try:
        dtype = jnp.dtype(value)
    except TypeError:
        dtype = None
    if dtype is None or dtype.name not in COMPUTE_DTYPES:
        raise JaxsepError(f"{where}: dtype must be one of {COMPUTE_DTYPES}, got {value!r}")
    return dtype


def mixed_einsum(spec: str, a: jax.Array, b: jax.Array, dtype: Any, precision: Any = None):
    """``einsum(spec, a, b)`` on operands cast to ``dtype``, returned as float32.

    The product itself is a ``dtype`` dot (GPUs accumulate it in float32 and round the output),
    as `flax.linen.Dense(dtype=...)` computes it; its gradient dots are then ``dtype`` dots too.
    A bfloat16 x bfloat16 -> float32 dot would keep the output's last bits, but JAX transposes it
    into mixed float32 x bfloat16 dots (float32 speed) and XLA:CPU cannot run it at all. For
    float32 this is the plain einsum.
    """
    return jnp.einsum(spec, a.astype(dtype), b.astype(dtype), precision=precision).astype(
        jnp.float32
    )

"""torch ``BatchNorm1d`` semantics and names in flax (the converted X-UMX and ChimeraNet use it)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array


class TorchBatchNorm(nn.Module):
    """BatchNorm1d over the last axis with torch's semantics and names.

    Differs from `flax.linen.BatchNorm` in the running variance update: torch stores the
    *unbiased* batch variance (n / (n - 1)) in `running_var`, so converted models keep training
    exactly like the original. Train mode normalises with the biased batch statistics of all
    rows (every axis but the last). Statistics and output are float32 whatever the input dtype
    (a bfloat16 mean over thousands of rows would lose the running statistics' precision).
    """

    momentum: float = 0.1
    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        features = x.shape[-1]
        x = x.astype(jnp.float32)
        weight = self.param("weight", nn.initializers.ones, (features,))
        bias = self.param("bias", nn.initializers.zeros, (features,))
        running_mean = self.variable(
            "batch_stats", "running_mean", lambda: jnp.zeros((features,), jnp.float32)
        )
        running_var = self.variable(
            "batch_stats", "running_var", lambda: jnp.ones((features,), jnp.float32)
        )
        if train:
            rows = x.reshape(-1, features)
            mean = jnp.mean(rows, axis=0)
            var = jnp.mean(jnp.square(rows - mean), axis=0)
            if not self.is_initializing():
                count = rows.shape[0]
                unbiased = var * (count / max(count - 1, 1))
                m = self.momentum
                running_mean.value = (1 - m) * running_mean.value + m * mean
                running_var.value = (1 - m) * running_var.value + m * unbiased
        else:
            mean, var = running_mean.value, running_var.value
        return (x - mean) * jax.lax.rsqrt(var + self.epsilon) * weight + bias

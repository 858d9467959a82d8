"""Strided and transposed 1-D convolutions (kernel 2s, stride s) as polyphase matmuls.

Jukebox's VQ-VAE resamples by 2 with ``Conv1d(k=4, s=2, p=1)`` down and
``ConvTranspose1d(k=4, s=2, p=1)`` up. Through `lax.conv_general_dilated` the up-convolution's
forward, and the down-convolution's input gradient, are *base-dilated* convolutions, which XLA:CPU
runs on a slow generic path: in the level-0 training step at batch 1 x 16384 the three of them took
261 of 806 ms (`tools/profile_step.py vqvae train`). Splitting the signal into s phases makes both
a stride-1, kernel-2 problem over s * C channels: two matmuls, whose gradients are matmuls too.

The parameters keep the names, shapes and meaning of `flax.linen.Conv` (``kernel [2s, C_in,
C_out]``) and of `flax.linen.ConvTranspose(transpose_kernel=True)` (``kernel [2s, C_out, C_in]``),
so checkpoints and converters are unchanged, and the tests compare against those modules.
Like them, ``dtype`` is the computation (and output) dtype; parameters stay float32.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array


def _phase_matmul(
    blocks: Array, w_now: Array, w_prev: Array, now: slice, prev: slice, dtype: Any
) -> Array:
    blocks, w_now, w_prev = (a.astype(dtype) for a in (blocks, w_now, w_prev))
    return jnp.einsum("btc,cd->btd", blocks[:, now], w_now) + jnp.einsum(
        "btc,cd->btd", blocks[:, prev], w_prev
    )


def _kernel_and_bias(module: nn.Module, kernel_shape: tuple[int, ...]) -> tuple[Array, Array]:
    """flax `nn.Conv` / `nn.ConvTranspose` parameters: "kernel" (LeCun normal) and a zero "bias"
    of `module.features`, so checkpoints of the library layers load unchanged."""
    kernel = module.param("kernel", nn.initializers.lecun_normal(), kernel_shape)
    bias = module.param("bias", nn.initializers.zeros, (module.features,))
    return kernel, bias


class StridedConv1d(nn.Module):
    """`nn.Conv(features, (2s,), strides=(s,), padding=((p, p),))` on ``[B, T, C]``."""

    features: int
    stride: int
    padding: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        s, p = self.stride, self.padding
        kernel, bias = _kernel_and_bias(self, (2 * s, x.shape[-1], self.features))
        batch, steps, channels = x.shape
        out_len = (steps + 2 * p - 2 * s) // s + 1
        total = s * (out_len + 1)  # whole s-sample blocks covering every tap used
        x = jnp.pad(x, ((0, 0), (p, max(total - steps - p, 0)), (0, 0)))[:, :total]
        blocks = x.reshape(batch, out_len + 1, s * channels)  # block j = samples s*j .. s*j+s-1
        # out[i] = sum_k x[s*i + k] W[k]; taps k < s read block i, taps k >= s read block i + 1
        w_first = kernel[:s].reshape(s * channels, self.features)
        w_second = kernel[s:].reshape(s * channels, self.features)
        now, prev = slice(0, out_len), slice(1, out_len + 1)
        y = _phase_matmul(blocks, w_first, w_second, now, prev, self.dtype)
        return y + bias.astype(self.dtype)


class TransposedConv1d(nn.Module):
    """Torch `ConvTranspose1d(k=2s, stride=s, padding=p)` on ``[B, T, C]``, with the parameters
    of `nn.ConvTranspose(features, (2s,), strides=(s,), padding=((2s-1-p,) * 2),
    transpose_kernel=True)`. Output length ``s * (T - 1) + 2s - 2p``."""

    features: int
    stride: int
    padding: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        s, p = self.stride, self.padding
        kernel, bias = _kernel_and_bias(self, (2 * s, self.features, x.shape[-1]))
        batch, steps, _ = x.shape
        taps = kernel.transpose(0, 2, 1)  # tap k as [C_in, C_out] (flax stores [C_out, C_in])
        # full output y[s*j + r] = x[j] W[r] + x[j-1] W[s + r], j = 0..T
        w_now = taps[:s].transpose(1, 0, 2).reshape(x.shape[-1], s * self.features)
        w_prev = taps[s:].transpose(1, 0, 2).reshape(x.shape[-1], s * self.features)
        padded = jnp.pad(x, ((0, 0), (1, 1), (0, 0)))  # padded[j + 1] = x[j]
        y = _phase_matmul(
            padded, w_now, w_prev, slice(1, steps + 2), slice(0, steps + 1), self.dtype
        )
        y = y.reshape(batch, s * (steps + 1), self.features)
        out_len = s * (steps - 1) + 2 * s - 2 * p
        return y[:, p : p + out_len] + bias.astype(self.dtype)

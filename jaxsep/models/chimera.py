"""ChimeraNet (Luo et al. 2017) as nussl's `build_recurrent_chimera` builds it.

Graph (reference/chimera.md §1): linear magnitude -> 20*log10(max(|X|, 1e-4)) -> one scalar
BatchNorm over the whole batch -> stacked BLSTM -> two heads reading the same BLSTM output:
an embedding head (Dense, sigmoid, unit L2 norm over D) for deep clustering and a mask head
(Dense, per-source sigmoid) for mask inference.

Parameter tree (nussl state_dict names in brackets, `layers.` prefix omitted)::

    params/normalization/{weight,bias}        [1]  (normalization.batch_norm.weight/.bias)
    batch_stats/normalization/{running_mean,running_var}  [1]  (... .running_mean/.running_var)
    params/recurrent_stack/<torch LSTM names> (recurrent_stack.rnn.*), torch layout as is
    params/embedding/{kernel [2H, F*D], bias} (embedding.linear.weight.T / .bias)
    params/mask/{kernel [2H, F*S], bias}      (mask.linear.weight.T / .bias)

Head outputs are reshaped row-major, so feature index f*D + d (f*S + s), as in nussl.
Magnitudes follow nussl's scipy-mode STFT (divided by the window sum): see `mixture_stft`.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxsep.audio.stft import scipy_istft, scipy_stft
from jaxsep.errors import JaxsepError
from jaxsep.nn.lstm import LSTM, forget_gate_bias_init

Array = jax.Array

SAMPLE_RATE = 16_000
N_FFT = 512
HOP = 128
WINDOW = "sqrt_hann"
AMPLITUDE_FLOOR = 1e-4  # torchaudio AmplitudeToDB's amin on the power: a -80 dB floor

# torch.nn.init.xavier_normal_: a plain (not truncated) normal, std sqrt(2 / (fan_in + fan_out)).
xavier_normal = nn.initializers.variance_scaling(1.0, "fan_avg", "normal")


def log_spectrogram(magnitude: Array) -> Array:
    """20*log10(max(|X|, 1e-4)): nussl's AmplitudeToDB on a linear magnitude (floor -80 dB)."""
    return 20.0 * jnp.log10(jnp.maximum(magnitude, AMPLITUDE_FLOOR))


def unit_norm(x: Array, axis: int = -1, eps: float = 1e-12) -> Array:
    """x / max(||x||_2, eps) along `axis` (torch.nn.functional.normalize)."""
    norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=axis, keepdims=True))
    return x / jnp.maximum(norm, eps)


class ScalarBatchNorm(nn.Module):
    """torch BatchNorm1d(1) over every element: one mean/var for all examples, frames and bins.

    Train mode normalises with the biased statistics of the whole (global) batch and stores the
    unbiased variance in `running_var`, with torch's momentum convention.
    """

    momentum: float = 0.1
    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        weight = self.param("weight", nn.initializers.ones, (1,))
        bias = self.param("bias", nn.initializers.zeros, (1,))
        running_mean = self.variable(
            "batch_stats", "running_mean", lambda: jnp.zeros((1,), jnp.float32)
        )
        running_var = self.variable(
            "batch_stats", "running_var", lambda: jnp.ones((1,), jnp.float32)
        )
        if train:
            mean = jnp.mean(x).reshape(1)
            var = jnp.mean(jnp.square(x - mean)).reshape(1)
            if not self.is_initializing():
                count = x.size
                unbiased = var * (count / max(count - 1, 1))
                m = self.momentum
                running_mean.value = (1 - m) * running_mean.value + m * mean
                running_var.value = (1 - m) * running_var.value + m * unbiased
        else:
            mean, var = running_mean.value, running_var.value
        return (x - mean) * jax.lax.rsqrt(var + self.epsilon) * weight + bias


class ChimeraNet(nn.Module):
    """`apply(v, magnitude [B, frames, bins])` -> `{"embedding": [B, frames, bins, D],
    "mask": [B, frames, bins, S]}`.

    `train=True` uses batch statistics (pass `mutable=["batch_stats"]`) and dropout between
    BLSTM layers (rng "dropout"). The log-spectrogram, normalised input and BLSTM output are
    sown in "intermediates" (`log_spectrogram`, `normalized`, `blstm_output`).
    """

    num_bins: int = 257
    hidden: int = 500
    layers: int = 4
    embedding_dim: int = 20
    num_sources: int = 2
    dropout: float = 0.3
    lstm_backend: str = "auto"

    def _check(self, magnitude: Array) -> None:
        if magnitude.ndim != 3 or magnitude.shape[-1] != self.num_bins:
            raise JaxsepError(
                f"ChimeraNet: input must be a magnitude [batch, frames, {self.num_bins}], "
                f"got shape {tuple(magnitude.shape)}"
            )

    @nn.compact
    def __call__(self, magnitude: Array, train: bool = False) -> dict[str, Array]:
        self._check(magnitude)
        batch, frames, bins = magnitude.shape
        x = log_spectrogram(magnitude)
        self.sow("intermediates", "log_spectrogram", x)
        x = ScalarBatchNorm(name="normalization")(x, train=train)
        self.sow("intermediates", "normalized", x)
        h = LSTM(
            hidden_size=self.hidden,
            num_layers=self.layers,
            bidirectional=True,
            dropout=self.dropout,
            backend=self.lstm_backend,
            weight_init=xavier_normal,
            bias_init=forget_gate_bias_init(1.0),
            name="recurrent_stack",
        )(x, train=train)
        self.sow("intermediates", "blstm_output", h)
        dense = dict(kernel_init=xavier_normal, bias_init=nn.initializers.zeros)
        embedding = nn.Dense(bins * self.embedding_dim, name="embedding", **dense)(h)
        embedding = embedding.reshape(batch, frames, bins, self.embedding_dim)
        embedding = unit_norm(jax.nn.sigmoid(embedding))
        mask = nn.Dense(bins * self.num_sources, name="mask", **dense)(h)
        mask = jax.nn.sigmoid(mask.reshape(batch, frames, bins, self.num_sources))
        return {"embedding": embedding, "mask": mask}


Model = ChimeraNet


def mixture_stft(wave: Array, n_fft: int = N_FFT, hop: int = HOP) -> Array:
    """Complex STFT `[..., frames, bins]` of `wave [..., T]` exactly as nussl computes it.

    scipy semantics: zero boundary padding, end padding, sqrt-Hann window, divided by the window
    sum (so magnitudes are ~326x smaller than a plain FFT at n_fft 512).
    """
    return scipy_stft(wave, n_fft, hop, WINDOW)


def mixture_magnitude(wave: Array, n_fft: int = N_FFT, hop: int = HOP) -> Array:
    """|STFT| `[..., frames, bins]`: the network input for `wave [..., T]` at 16 kHz."""
    return jnp.abs(mixture_stft(wave, n_fft, hop))


def separate_with_mask(
    module: nn.Module, variables: Any, wave: Array, n_fft: int = N_FFT, hop: int = HOP
) -> Array:
    """Mask-head separation (nussl DeepMaskEstimation): `wave [B, T]` -> `[B, S, T]`.

    Eval mode; estimate STFT = mask * |X| * exp(j angle X) = mask * X (mixture phase), then the
    scipy iSTFT truncated to the input length.
    """
    spec = mixture_stft(wave, n_fft, hop)
    mask = module.apply(variables, jnp.abs(spec))["mask"]
    estimates = jnp.moveaxis(mask * spec[..., None], -1, -3)  # [B, S, frames, bins]
    return scipy_istft(estimates, n_fft, hop, WINDOW, length=wave.shape[-1])

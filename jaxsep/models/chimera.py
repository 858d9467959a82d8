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
from jaxsep.errors import JaxsepError, check_sizes
from jaxsep.nn.batchnorm import TorchBatchNorm
from jaxsep.nn.lstm import LSTM, forget_gate_bias_init
from jaxsep.nn.precision import compute_dtype

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


class ChimeraNet(nn.Module):
    """`apply(v, magnitude [B, frames, bins])` -> `{"embedding": [B, frames, bins, D],
    "mask": [B, frames, bins, S]}`.

    `train=True` uses batch statistics (pass `mutable=["batch_stats"]`) and dropout between
    BLSTM layers (rng "dropout"). The log-spectrogram, normalised input and BLSTM output are
    sown in "intermediates" (`log_spectrogram`, `normalized`, `blstm_output`).
    `dtype="bfloat16"`: bfloat16 BLSTM and head matmuls; the input normalisation, the heads'
    sigmoid and unit norm, and both outputs stay float32 (`jaxsep.nn.precision`).
    """

    num_bins: int = 257
    hidden: int = 500
    layers: int = 4
    embedding_dim: int = 20
    num_sources: int = 2
    dropout: float = 0.3
    lstm_backend: str = "auto"
    dtype: str = "float32"

    def _check(self, magnitude: Array) -> None:
        compute_dtype(self.dtype, "ChimeraNet")
        check_sizes(
            "ChimeraNet",
            num_bins=self.num_bins,
            hidden=self.hidden,
            layers=self.layers,
            embedding_dim=self.embedding_dim,
            num_sources=self.num_sources,
        )
        if not 0 <= self.dropout < 1:
            raise JaxsepError(f"ChimeraNet: dropout must be in [0, 1), got {self.dropout}")
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
        # torch BatchNorm1d(1) over every element: one mean/var for all examples, frames and bins
        x = TorchBatchNorm(name="normalization")(x[..., None], train=train)[..., 0]
        self.sow("intermediates", "normalized", x)
        h = LSTM(
            hidden_size=self.hidden,
            num_layers=self.layers,
            bidirectional=True,
            dropout=self.dropout,
            backend=self.lstm_backend,
            weight_init=xavier_normal,
            bias_init=forget_gate_bias_init(1.0),
            # two time steps per scan iteration: train step 592 -> 564 ms at batch 2 x 1 s on one
            # CPU thread (fewer loop trips, each step's cell fused with the next step's matmul)
            unroll=2,
            dtype=self.dtype,
            name="recurrent_stack",
        )(x, train=train)
        self.sow("intermediates", "blstm_output", h)
        dense = dict(kernel_init=xavier_normal, bias_init=nn.initializers.zeros, dtype=self.dtype)
        # The heads see [batch * frames, 2H] rows: with a 3-D input XLA:CPU transposed each
        # head's output gradient ([.., bins * D], 20 MB at batch 8) before the kernel-gradient
        # dot. Train step, batch 8 x 1 s: 1843 -> 1797 ms on one thread, 1026 -> 986 on two (A/B
        # in one process); the inference program compiles to the same ops either way.
        h = h.reshape(batch * frames, h.shape[-1])
        embedding = nn.Dense(bins * self.embedding_dim, name="embedding", **dense)(h)
        embedding = embedding.reshape(batch, frames, bins, self.embedding_dim)
        embedding = unit_norm(jax.nn.sigmoid(embedding.astype(jnp.float32)))
        mask = nn.Dense(bins * self.num_sources, name="mask", **dense)(h)
        mask = mask.astype(jnp.float32).reshape(batch, frames, bins, self.num_sources)
        mask = jax.nn.sigmoid(mask)
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


def stft_sizes(module: nn.Module) -> tuple[int, int]:
    """(n_fft, hop) a ChimeraNet was built for: n_fft = 2 (bins - 1), hop = n_fft / 4 (nussl)."""
    n_fft = 2 * (module.num_bins - 1)
    return n_fft, n_fft // 4


def kmeans_masks(
    embedding: Array,
    magnitude: Array,
    num_clusters: int,
    iterations: int = 20,
    threshold_db: float = -40.0,
) -> Array:
    """Binary masks `[B, frames, bins, K]` from weighted k-means on the embeddings (jit-able).

    Deep-clustering-head inference (nussl DeepClustering): only bins within `threshold_db` of the
    example's loudest bin take part, weighted by their magnitude. Deterministic init: the loudest
    bin, then repeatedly the weighted bin farthest from the chosen centroids (k-means++ without
    randomness). The cluster order is arbitrary, so it is NOT tied to the model's source names.
    """
    batch, frames, bins, dim = embedding.shape
    v = embedding.reshape(batch, -1, dim)
    mag = magnitude.reshape(batch, -1)
    floor = jnp.max(mag, axis=1, keepdims=True) * 10.0 ** (threshold_db / 20.0)
    w = jnp.where(mag >= floor, mag, 0.0)

    def init_one(vb, wb):
        first = vb[jnp.argmax(wb)]
        centroids = jnp.tile(first, (num_clusters, 1))
        for k in range(1, num_clusters):
            dist = jnp.min(jnp.sum((vb[:, None] - centroids[None, :k]) ** 2, -1), axis=1)
            centroids = centroids.at[k].set(vb[jnp.argmax(wb * dist)])
        return centroids

    def lloyd(centroids, _):
        dist = jnp.sum((v[:, :, None] - centroids[:, None]) ** 2, -1)  # [B, N, K]
        onehot = jax.nn.one_hot(jnp.argmin(dist, -1), num_clusters) * w[..., None]
        total = jnp.sum(onehot, axis=1)[..., None]  # [B, K, 1]
        means = jnp.einsum("bnk,bnd->bkd", onehot, v) / jnp.maximum(total, 1e-12)
        return jnp.where(total > 0, means, centroids), None

    centroids = jax.vmap(init_one)(v, w)
    centroids, _ = jax.lax.scan(lloyd, centroids, None, length=iterations)
    dist = jnp.sum((v[:, :, None] - centroids[:, None]) ** 2, -1)
    masks = jax.nn.one_hot(jnp.argmin(dist, -1), num_clusters)
    return masks.reshape(batch, frames, bins, num_clusters)


def separate_with_embeddings(
    module: nn.Module,
    variables: Any,
    wave: Array,
    n_fft: int = N_FFT,
    hop: int = HOP,
    iterations: int = 20,
) -> Array:
    """Embedding-head separation `wave [B, T]` -> `[B, S, T]`: k-means binary masks on the
    mixture STFT (mixture phase). Clusters come out in arbitrary order (see `kmeans_masks`)."""
    spec = mixture_stft(wave, n_fft, hop)
    magnitude = jnp.abs(spec)
    embedding = module.apply(variables, magnitude)["embedding"]
    masks = kmeans_masks(embedding, magnitude, module.num_sources, iterations)
    estimates = jnp.moveaxis(masks * spec[..., None], -1, -3)
    return scipy_istft(estimates, n_fft, hop, WINDOW, length=wave.shape[-1])


def separate_waveforms(
    module: nn.Module,
    variables: Any,
    wave: Array,
    head: str | None = None,
    config: dict | None = None,
) -> Array:
    """The `jaxsep.Separator` hook: `wave [B, T, C]` -> stems `[B, S, T, C]`.

    Each channel is separated on its own (ChimeraNet is a mono model; nussl does the same per
    channel). `head="mask"` (default, what the paper evaluates): soft sigmoid masks of the mask
    head with the mixture phase -- the masks need not sum to 1, so neither need the stems.
    `head="kmeans"`: binary k-means masks of the embedding head, in arbitrary source order.
    Without `head`, the model directory's config.json key "separation_head" picks (default mask).
    """
    if head is None:
        head = (config or {}).get("separation_head", "mask")
    if head not in ("mask", "kmeans"):
        raise JaxsepError(f"ChimeraNet: head must be 'mask' or 'kmeans', got {head!r}")
    batch, length, channels = wave.shape
    mono = jnp.moveaxis(wave, -1, 1).reshape(batch * channels, length)
    n_fft, hop = stft_sizes(module)
    if head == "mask":
        stems = separate_with_mask(module, variables, mono, n_fft, hop)
    else:
        stems = separate_with_embeddings(module, variables, mono, n_fft, hop)
    stems = stems.reshape(batch, channels, stems.shape[1], length)
    return jnp.transpose(stems, (0, 2, 3, 1))

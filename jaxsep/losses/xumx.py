"""X-UMX training losses: magnitude MSE, the multi-domain loss (MDL) with the combination loss
(CL), and the two feature-informed latent regularisers (Con-Reg, Dis-Reg).

All functions are pure, jit-able and batch first. Layouts: magnitudes ``[B, S, frames, bins, C]``
(the X-UMX output), waveforms ``[B, S, T, C]`` / mixture ``[B, T, C]``, per-source latents
``[B, S, frames, D]``, frozen embeddings ``[B, S, frames, E]`` (already repeated onto STFT frames
by :func:`repeat_to_frames`).

MDL (asteroid ``egs/musdb18/X-UMX/train.py``, matched to its stored values):
``loss = mix_coef * L_time + L_freq`` where, over the source subsets ``P`` (all non-empty proper
subsets with combination, i.e. 14 for 4 sources; the singletons without),

* ``L_freq = mean_P mean((sum_{s in P} S_hat_s - sum_{s in P} |S_s|)^2)``;
* ``L_time = 1 + mean_{P, b, c} wSDR(sum_P s_hat, sum_P s, x)`` with the weighted SDR of
  Choi et al. (2019): ``a = |s|^2 / (|s|^2 + |x - s|^2 + eps)``,
  ``wSDR = -a cos(s_hat, s) - (1 - a) cos(x - s_hat, x - s)``, ``eps = 1e-10``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxsep.models.embeddings import repeat_to_frames

Array = jax.Array
EPS = 1e-10  # asteroid's weighted-SDR epsilon


def source_combinations(num_sources: int, combine: bool = True) -> np.ndarray:
    """0/1 matrix ``[P, S]``: row p selects the sources summed in combination p.

    ``combine=True``: every subset of size 1 .. S-1, by size then lexicographically (4 sources:
    4 singles + 6 pairs + 4 triples = 14 rows); ``combine=False``: the S singletons.
    """
    sizes = range(1, num_sources) if combine and num_sources > 1 else (1,)
    rows = []
    for size in sizes:
        for subset in itertools.combinations(range(num_sources), size):
            row = np.zeros(num_sources, np.float32)
            row[list(subset)] = 1.0
            rows.append(row)
    return np.stack(rows)


def combine_sources(x: Array, combinations: np.ndarray) -> Array:
    """Sum the sources of every combination: ``[B, S, ...] -> [B, P, ...]``."""
    return jnp.einsum("ps,bs...->bp...", jnp.asarray(combinations, x.dtype), x)


def magnitude_mse(estimate: Array, target: Array) -> Array:
    """Mean squared error over all elements (Open-Unmix's training loss)."""
    return jnp.mean(jnp.square(estimate - target))


def freq_domain_loss(estimate: Array, target: Array, combine: bool = True) -> Array:
    """``L_freq``: mean over combinations of the MSE of summed magnitudes ``[B, S, ...]``."""
    combos = source_combinations(estimate.shape[1], combine)
    diff = combine_sources(estimate, combos) - combine_sources(target, combos)
    return jnp.mean(jnp.square(diff))  # every combination has the same size: mean of means


def _cosine_rows(a: Array, b: Array, eps: float) -> Array:
    """asteroid's ``<a, b> / (sqrt(eps + |a|^2) sqrt(eps + |b|^2) + eps)`` over the last axis."""
    dot = jnp.sum(a * b, axis=-1)
    norm = jnp.sqrt(eps + jnp.sum(a * a, axis=-1)) * jnp.sqrt(eps + jnp.sum(b * b, axis=-1))
    return dot / (norm + eps)


def weighted_sdr(estimate: Array, reference: Array, mixture: Array, eps: float = EPS) -> Array:
    """Weighted SDR loss per row, time on the last axis (in [-1, 1]; -1 is perfect)."""
    noise, noise_hat = mixture - reference, mixture - estimate
    ref_energy = jnp.sum(jnp.square(reference), axis=-1)
    alpha = ref_energy / (ref_energy + jnp.sum(jnp.square(noise), axis=-1) + eps)
    return -alpha * _cosine_rows(estimate, reference, eps) - (1 - alpha) * _cosine_rows(
        noise_hat, noise, eps
    )


def time_domain_loss(
    estimate: Array, reference: Array, mixture: Array, combine: bool = True
) -> Array:
    """``L_time`` from waveforms ``estimate [B, S, T', C]``, ``reference [B, S, T, C]``,
    ``mixture [B, T, C]``; references and mixture are cropped to the estimate length ``T'``
    (the ISTFT without ``length`` is shorter than the input)."""
    length = estimate.shape[2]
    combos = source_combinations(estimate.shape[1], combine)
    est = jnp.swapaxes(combine_sources(estimate, combos), -1, -2)  # [B, P, C, T']
    ref = jnp.swapaxes(combine_sources(reference[:, :, :length], combos), -1, -2)
    mix = jnp.swapaxes(mixture[:, None, :length], -1, -2)  # the same row for every combination
    return 1.0 + jnp.mean(weighted_sdr(est, ref, mix))


def mdl_loss(
    est_magnitude: Array,
    target_magnitude: Array,
    est_wave: Array | None,
    target_wave: Array | None,
    mixture: Array | None,
    *,
    mix_coef: float = 10.0,
    combine: bool = True,
    multidomain: bool = True,
) -> tuple[Array, dict[str, Array]]:
    """MDL + CL: ``(mix_coef * L_time + L_freq, {"freq_loss", "time_loss"})``.

    ``multidomain=False`` is the frequency loss alone (the waveforms may then be None).
    """
    freq = freq_domain_loss(est_magnitude, target_magnitude, combine)
    if not multidomain:
        return freq, {"freq_loss": freq}
    time = time_domain_loss(est_wave, target_wave, mixture, combine)
    return mix_coef * time + freq, {"freq_loss": freq, "time_loss": time}


# --- frozen embeddings on STFT frames -------------------------------------------------------


EmbedFn = Callable[[Array], Array]


def stem_embeddings(
    embed: EmbedFn,
    stems_16k: Array,
    num_frames: int,
    hop: int,
    sample_rate: float,
    example_seconds: float = 0.96,
) -> Array:
    """Frozen embeddings of every stem on the STFT frames: ``[B, S, T16] -> [B, S, frames, E]``.

    ``embed`` is any function ``[N, T16] -> [N, examples, E]`` (VGGish, or anything else); its
    output is treated as a constant (``stop_gradient``).
    """
    batch, sources = stems_16k.shape[:2]
    emb = embed(stems_16k.reshape(batch * sources, -1))
    emb = jax.lax.stop_gradient(emb).reshape(batch, sources, *emb.shape[1:])
    return repeat_to_frames(emb, num_frames, hop, sample_rate, example_seconds)


# --- latent regularisers ----------------------------------------------------------------------


def cosine_similarity(a: Array, b: Array, eps: float = 1e-8) -> Array:
    """``<a, b> / (sqrt(|a|^2 + eps) sqrt(|b|^2 + eps))`` over the last axis.

    The eps sits inside the square roots so the gradient stays finite at a zero vector.
    """
    dot = jnp.sum(a * b, axis=-1)
    norm_a = jnp.sqrt(jnp.sum(jnp.square(a), axis=-1) + eps)
    norm_b = jnp.sqrt(jnp.sum(jnp.square(b), axis=-1) + eps)
    return dot / (norm_a * norm_b)


def con_reg(projected: Array, features: Array, margin: float = 0.2) -> tuple[Array, dict]:
    """Contrastive cosine loss between projected latents and frozen features (Con-Reg).

    ``projected [B, S, frames, E]`` is source s's latent through its own 1x1 projection;
    ``features [B, S, frames, E]`` are the frozen embeddings of the true stems on the same frames.
    With ``c(s, s') = cos(projected[b, s, t], features[b, s', t])`` (same example b and frame t):

    * positive (same source): ``1 - c(s, s)``;
    * negative (other sources of the same example): ``max(0, c(s, s') - margin)``, s' != s;

    loss = mean of the positive terms + mean of the negative terms (torch
    ``CosineEmbeddingLoss`` for labels +1 / -1, averaged per label).
    """
    positive = jnp.mean(1.0 - cosine_similarity(projected, features))
    sources = projected.shape[1]
    if sources > 1:  # gather the (s, s' != s) pairs: no masked S x S matrix
        first, second = np.nonzero(~np.eye(sources, dtype=bool))
        sim = cosine_similarity(projected[:, first], features[:, second])
        negative = jnp.mean(jnp.maximum(sim - margin, 0.0))
    else:
        negative = jnp.zeros((), projected.dtype)
    return positive + negative, {"con_positive": positive, "con_negative": negative}


def source_pair_distances(x: Array) -> Array:
    """``1 - cos`` for every source pair i < j: ``[B, S, frames, D] -> [B, pairs, frames]``.

    Only the pairs are gathered (no S x S matrix with a masked diagonal).
    """
    first, second = np.triu_indices(x.shape[1], k=1)
    return 1.0 - cosine_similarity(x[:, first], x[:, second])


def dis_reg(latents: Array, features: Array) -> Array:
    """Distance regulariser (Dis-Reg): source-pair distances of the latent may not exceed those
    of the frozen features.

    For every example b, frame t and source pair i < j:
    ``max(D_latent(i, j) - D_feat(i, j), 0)`` with the cosine distance ``D = 1 - cos`` (scale
    free, so a 1024-d tanh latent and a 128-d embedding compare without a projection); the loss
    is the mean over (b, pairs, t). ``latents [B, S, frames, D]``, ``features [B, S, frames, E]``.
    """
    if latents.shape[1] < 2:
        return jnp.zeros((), latents.dtype)
    gap = source_pair_distances(latents) - source_pair_distances(features)
    return jnp.mean(jnp.maximum(gap, 0.0))

"""Training losses and their targets, as pure jnp functions (jit- and grad-friendly).

ChimeraNet terms follow nussl (reference/chimera.md §4-§5): the low-rank weighted deep
clustering loss, the mask-inference L1 (magnitude spectrum approximation), its
permutation-invariant form, and the chimera combination alpha*DC + (1-alpha)*MI.

Layout: batch first, time-frequency bins in the middle, the embedding / source axis last, e.g.
embedding `[B, frames, bins, D]`, masks and source magnitudes `[B, frames, bins, S]`,
mixture magnitude and weights `[B, frames, bins]`.
"""

from __future__ import annotations

import itertools
from typing import Literal

import jax
import jax.numpy as jnp

Array = jax.Array
DCNormalization = Literal["nussl", "asteroid"]

NUSSL_DC_EPSILON = 1e-8  # added to nussl's (sum w^2)^2 denominator
NUSSL_WEIGHT_EPSILON = 1e-6  # added to the magnitude sum in nussl's MagnitudeWeights
CHIMERA_ALPHA = 0.01  # the paper's weight of the deep clustering term


# ------------------------------------------------------------------------------------------
# Targets and weights (nussl transforms)


def ideal_binary_mask(source_magnitudes: Array) -> Array:
    """nussl's IBM `[..., S]` from source magnitudes: 1 for the loudest source of a bin.

    Tied maxima share 1/n, and shares <= 0.5 are zeroed, so a tie (e.g. an all-silent bin with
    S >= 2) gives an all-zero row, which the deep clustering loss then ignores.
    """
    is_max = (source_magnitudes == jnp.max(source_magnitudes, axis=-1, keepdims=True)).astype(
        source_magnitudes.dtype
    )
    shares = is_max / jnp.sum(is_max, axis=-1, keepdims=True)
    return jnp.where(shares > 0.5, shares, 0.0)


def magnitude_weights(mix_magnitude: Array) -> Array:
    """nussl's MagnitudeWeights of `[..., frames, bins]`: sqrt(|X| / (sum|X| + 1e-6) * T*F).

    Computed per example over the last two axes; the result is W^(1/2) of the DC paper
    (W = |X| / mean |X|), so sum(w^2) ~= T*F.
    """
    frames, bins = mix_magnitude.shape[-2:]
    total = jnp.sum(mix_magnitude, axis=(-2, -1), keepdims=True)
    return jnp.sqrt(mix_magnitude / (total + NUSSL_WEIGHT_EPSILON) * (frames * bins))


def vad_weights(mix_magnitude: Array, threshold_db: float = 40.0) -> Array:
    """asteroid's `ebased_vad` as 0/1 floats: bins within `threshold_db` of the example's max."""
    log_magnitude = 20.0 * jnp.log10(mix_magnitude)
    loudest = jnp.max(log_magnitude, axis=(-2, -1), keepdims=True)
    return (log_magnitude > loudest - threshold_db).astype(mix_magnitude.dtype)


def unit_rows(x: Array, eps: float = 1e-12) -> Array:
    """Rows scaled to unit L2 norm over the last axis; zero rows stay zero (F.normalize)."""
    norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True))
    return x / jnp.maximum(norm, eps)


# ------------------------------------------------------------------------------------------
# Deep clustering


def _frobenius_sq(a: Array, b: Array) -> Array:
    """||a^T b||_F^2 per example for a [B, N, P], b [B, N, Q] (never forms N x N)."""
    product = jnp.einsum("bnp,bnq->bpq", a, b, precision=jax.lax.Precision.HIGHEST)
    return jnp.sum(jnp.square(product), axis=(1, 2))


def deep_clustering_per_example(
    embedding: Array,
    assignments: Array,
    weights: Array,
    normalization: DCNormalization = "nussl",
) -> Array:
    """Weighted deep clustering loss ||W^1/2 (V V^T - Y Y^T) W^1/2||_F^2 / norm, per example [B].

    embedding `[B, ..., D]`, assignments `[B, ..., S]` (e.g. the IBM), weights `[B, ...]`
    (magnitude, VAD or ones). V and Y rows are re-normalised to unit length (no-op for a unit-norm
    head and one-hot targets; zero rows stay zero), then scaled by w. The low-rank identity
    ||V^T V||^2 - 2||V^T Y||^2 + ||Y^T Y||^2 keeps memory O(N (D + S)).

    normalization: "nussl" divides by (sum w^2)^2 + 1e-8 (nussl DeepClusteringLoss);
    "asteroid" divides by sum w (asteroid's deep_clustering_loss with w as its binary mask):
    the same numerator, values ~1000x larger, which unbalances a chimera alpha of 0.01.
    """
    batch = embedding.shape[0]
    w = weights.reshape(batch, -1, 1)
    v = w * unit_rows(embedding.reshape(batch, -1, embedding.shape[-1]))
    y = w * unit_rows(assignments.reshape(batch, -1, assignments.shape[-1]))
    numerator = _frobenius_sq(v, v) - 2.0 * _frobenius_sq(v, y) + _frobenius_sq(y, y)
    if normalization == "nussl":
        denominator = jnp.square(jnp.sum(jnp.square(w), axis=(1, 2))) + NUSSL_DC_EPSILON
    elif normalization == "asteroid":
        denominator = jnp.sum(w, axis=(1, 2))
    else:
        raise ValueError(f"unknown deep clustering normalization {normalization!r}")
    return numerator / denominator


def deep_clustering_loss(
    embedding: Array,
    assignments: Array,
    weights: Array,
    normalization: DCNormalization = "nussl",
) -> Array:
    """Batch mean of `deep_clustering_per_example` (nussl's reduction)."""
    return jnp.mean(deep_clustering_per_example(embedding, assignments, weights, normalization))


# ------------------------------------------------------------------------------------------
# Mask inference


def l1_loss(estimates: Array, targets: Array) -> Array:
    """Mean absolute error over every element (torch.nn.L1Loss)."""
    return jnp.mean(jnp.abs(estimates - targets))


def mask_inference_loss(mask: Array, mix_magnitude: Array, source_magnitudes: Array) -> Array:
    """MSA L1: mean |mask * |X| - |S_s|| over B*T*F*S; mask `[B, T, F, S]`, |X| `[B, T, F]`."""
    return l1_loss(mask * mix_magnitude[..., None], source_magnitudes)


def permutation_invariant_l1(estimates: Array, targets: Array, per_bin: bool = False) -> Array:
    """L1 under the best permutation of the sources (last axis), then the batch mean.

    Default: utterance-level PIT, one permutation per example (mean over all its elements).
    `per_bin=True` reproduces nussl's PermutationInvariantLoss(L1Loss) exactly: it averages over
    the source axis only and takes the minimum per time-frequency bin, so every bin may pick its
    own permutation (always <= the utterance-level value). S! permutations: meant for small S.
    """
    batch, sources = estimates.shape[0], estimates.shape[-1]
    estimates = estimates.reshape(batch, -1, sources)
    targets = targets.reshape(batch, -1, sources)
    per_permutation = jnp.stack(
        [
            jnp.mean(jnp.abs(estimates - targets[..., list(p)]), axis=-1)
            for p in itertools.permutations(range(sources))
        ]
    )  # [P, B, N]
    if per_bin:
        return jnp.mean(jnp.min(per_permutation, axis=0))
    return jnp.mean(jnp.min(jnp.mean(per_permutation, axis=-1), axis=0))


# ------------------------------------------------------------------------------------------
# Chimera


def chimera_loss(
    outputs: dict[str, Array],
    mix_magnitude: Array,
    source_magnitudes: Array,
    assignments: Array,
    weights: Array,
    alpha: float = CHIMERA_ALPHA,
) -> tuple[Array, dict[str, Array]]:
    """alpha * DC(embedding) + (1 - alpha) * MI-L1(mask): nussl's Closure with weights
    {DeepClusteringLoss: alpha, L1Loss: 1 - alpha}. Returns (total, {"dc", "mi"})."""
    dc = deep_clustering_loss(outputs["embedding"], assignments, weights)
    mi = mask_inference_loss(outputs["mask"], mix_magnitude, source_magnitudes)
    return alpha * dc + (1.0 - alpha) * mi, {"dc": dc, "mi": mi}

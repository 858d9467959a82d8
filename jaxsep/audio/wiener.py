"""Multichannel Wiener filter with EM refinement (norbert / Open-Unmix post-processing), jit-able.

Given nonnegative magnitude estimates of each source and the complex mixture STFT, the filter
builds initial complex estimates (magnitude x mixture phase, or a ratio mask) and refines them
with the simplified EM of Nugraha et al. / Uhlich et al.: each iteration re-estimates per-source
power spectral densities ``v_s(t, f)`` (mean over channels of ``|y_s|^2``) and spatial covariance
matrices ``R_s(f) = sum_t y_s y_s^H / (eps + sum_t v_s)``, then applies the multichannel gain
``v_s R_s (sum_s v_s R_s + sqrt(eps) I)^-1`` to the mixture.

Layout (DESIGN: batch first, channels last, sources after batch as in the X-UMX output):
magnitudes ``[..., S, frames, bins, C]``, mixture ``[..., frames, bins, C]``, result
``[..., S (+1 with residual), frames, bins, C]``.

Two reference conventions differ only in their defaults, selected by ``style``:

* ``"openunmix"`` -- ``openunmix.filtering.wiener`` as the ``Separator`` runs it: float32,
  ``eps = 1e-10``. The Separator calls it once per block of ``wiener_win_len`` frames (pass
  ``window=300`` for ``umxhq``), so EM statistics and the ``max_abs`` rescaling are per block.
* ``"norbert"`` -- ``norbert.wiener`` 0.2.1 as the X-UMX eval runs it: ``eps`` = float64
  machine epsilon (the eval casts the mixture to complex128, and norbert takes ``eps`` from that
  dtype), whole track (``window=None``), mono inverse ``1 / (M + eps)``. We keep that ``eps`` in
  float32 too, so both precisions filter with the same regulariser.

Both scale mixture and estimates by ``max(1, max|X| / scale_factor)`` before EM and back after.
``residual=True`` appends the complex residual ``X - sum_s y_s`` as an extra source before EM
(Open-Unmix semantics; norbert's magnitude-domain ``residual_model`` is not reproduced).
Open-Unmix's in-place quirk that turns exact-zero mixture bins into ``1 + 0j`` is not copied:
only digital silence would differ.

Windowed mode pads the frames to whole blocks with zeros (a zero block stays exactly zero through
every step, so the padding needs no further mask) and runs the blocks one after another with
``lax.map``: memory is bounded by one block, whatever the track length.
"""

from __future__ import annotations

from functools import partial
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from jaxsep.errors import JaxsepError

Style = Literal["openunmix", "norbert"]

_DEFAULT_EPS = {"openunmix": 1e-10, "norbert": float(np.finfo(np.float64).eps)}


def wiener(
    target_magnitudes: jax.Array,
    mix_stft: jax.Array,
    *,
    iterations: int = 1,
    softmask: bool = False,
    residual: bool = False,
    style: Style = "openunmix",
    eps: float | None = None,
    scale_factor: float = 10.0,
    window: int | None = None,
) -> jax.Array:
    """Complex source STFTs ``[..., S', frames, bins, C]`` from magnitudes and the mixture STFT.

    Args:
      target_magnitudes: nonnegative ``[..., S, frames, bins, C]`` source magnitude estimates
        (with ``softmask=True`` any nonnegative spectrogram, e.g. powers).
      mix_stft: complex ``[..., frames, bins, C]`` mixture STFT; its dtype sets the precision
        (complex64, or complex128 when x64 is enabled).
      iterations: EM iterations; 0 returns the initial estimates (no rescaling, no EM).
      softmask: initial estimates ``X * V_s / (eps + sum V)`` instead of ``V_s * exp(i angle X)``.
      residual: append ``X - sum_s y_s`` as source ``S`` before EM (``S' = S + 1``).
      style: ``"openunmix"`` or ``"norbert"``; sets the default ``eps`` (see module docstring).
      eps: overrides the style's epsilon (used in softmask, covariance weights and ``sqrt(eps) I``).
      scale_factor: mixture and estimates are divided by ``max(1, max|X| / scale_factor)``.
      window: frames per independently filtered block (Open-Unmix ``wiener_win_len``); ``None``
        filters the whole track at once.

    All keyword arguments are static, so ``jax.jit(partial(wiener, iterations=2, ...))`` works.
    """
    _check(target_magnitudes, mix_stft, iterations, style, window, scale_factor)
    eps = _DEFAULT_EPS[style] if eps is None else float(eps)
    return _wiener(
        target_magnitudes,
        mix_stft,
        int(iterations),
        bool(softmask),
        bool(residual),
        style,
        eps,
        float(scale_factor),
        window,
    )


def _check(mags, mix, iterations, style, window, scale_factor) -> None:
    """One-line errors for arguments that would otherwise fail deep inside XLA (or silently)."""
    where = "jaxsep.audio.wiener"
    if style not in _DEFAULT_EPS:
        raise JaxsepError(f"{where}: style must be 'openunmix' or 'norbert', got {style!r}")
    if not jnp.issubdtype(jnp.result_type(mix), jnp.complexfloating):
        raise JaxsepError(f"{where}: mix_stft must be complex, got {jnp.result_type(mix)}")
    if jnp.ndim(mags) < 4 or jnp.ndim(mix) < 3:
        raise JaxsepError(
            f"{where}: expected magnitudes [..., S, frames, bins, C] and mixture "
            f"[..., frames, bins, C], got {jnp.shape(mags)} and {jnp.shape(mix)}"
        )
    if jnp.shape(mags)[:-4] + jnp.shape(mags)[-3:] != jnp.shape(mix):
        raise JaxsepError(
            f"{where}: magnitudes {jnp.shape(mags)} do not match mixture {jnp.shape(mix)} "
            "(expected [..., S, frames, bins, C] and [..., frames, bins, C])"
        )
    if not isinstance(iterations, (int, np.integer)) or iterations < 0:
        raise JaxsepError(f"{where}: iterations must be an integer >= 0, got {iterations!r}")
    if window is not None and (not isinstance(window, (int, np.integer)) or window < 1):
        raise JaxsepError(f"{where}: window must be None or a positive integer, got {window!r}")
    if not scale_factor > 0:
        raise JaxsepError(f"{where}: scale_factor must be positive, got {scale_factor!r}")


@partial(jax.jit, static_argnums=(2, 3, 4, 5, 6, 7, 8))
def _wiener(mags, mix, iterations, softmask, residual, style, eps, scale_factor, window):
    complex_dtype = jnp.result_type(mix)
    real_dtype = jnp.finfo(complex_dtype).dtype
    mags = jnp.asarray(mags, real_dtype)
    lead, (n_src, n_frames, n_bins, n_chan) = mags.shape[:-4], mags.shape[-4:]
    batch = int(np.prod(lead, dtype=np.int64))
    block = n_frames if window is None else min(int(window), n_frames)
    n_blocks = -(-n_frames // block)
    pad = n_blocks * block - n_frames

    # [..., S, T, F, C] -> [batch * blocks, S, block, F, C]; zero frames stay zero throughout.
    mags = mags.reshape(batch, n_src, n_frames, n_bins, n_chan)
    mix = mix.reshape(batch, n_frames, n_bins, n_chan)
    if pad:
        mags = jnp.pad(mags, [(0, 0), (0, 0), (0, pad), (0, 0), (0, 0)])
        mix = jnp.pad(mix, [(0, 0), (0, pad), (0, 0), (0, 0)])
    mags = mags.reshape(batch, n_src, n_blocks, block, n_bins, n_chan).swapaxes(1, 2)
    mags = mags.reshape(batch * n_blocks, n_src, block, n_bins, n_chan)
    mix = mix.reshape(batch * n_blocks, block, n_bins, n_chan)

    filter_block = partial(
        _filter_block,
        iterations=iterations,
        softmask=softmask,
        residual=residual,
        style=style,
        eps=eps,
        scale_factor=scale_factor,
    )
    if batch * n_blocks == 1:
        out = filter_block((mags[0], mix[0]))[None]
    else:
        out = jax.lax.map(filter_block, (mags, mix))

    n_out = out.shape[1]
    out = out.reshape(batch, n_blocks, n_out, block, n_bins, n_chan).swapaxes(1, 2)
    out = out.reshape(batch, n_out, n_blocks * block, n_bins, n_chan)[:, :, :n_frames]
    return out.reshape(*lead, n_out, n_frames, n_bins, n_chan)


def _filter_block(args, *, iterations, softmask, residual, style, eps, scale_factor):
    """Wiener/EM on one block: magnitudes ``[S, T, F, C]``, mixture ``[T, F, C]``."""
    mags, mix = args
    if softmask:
        y = mix * (mags / (eps + jnp.sum(mags, axis=0)))
    else:
        y = mags * _unit_phase(mix)
    if residual:
        y = jnp.concatenate([y, (mix - jnp.sum(y, axis=0))[None]], axis=0)
    if iterations == 0:
        return y

    max_abs = jnp.maximum(1.0, jnp.max(jnp.abs(mix)) / scale_factor)
    mix, y = mix / max_abs, y / max_abs
    em_step = partial(_em_step, mix=mix, eps=eps, style=style)
    y = jax.lax.fori_loop(0, iterations, lambda _, y: em_step(y), y)
    return y * max_abs


def _unit_phase(mix: jax.Array) -> jax.Array:
    """``exp(i angle(mix))``, with angle 0 (i.e. 1) where the mixture is exactly 0, as atan2."""
    magnitude = jnp.abs(mix)
    safe = jnp.where(magnitude > 0, magnitude, 1.0)
    return jnp.where(magnitude > 0, mix / safe, jnp.ones_like(mix))


def _em_step(y: jax.Array, *, mix: jax.Array, eps: float, style: str) -> jax.Array:
    """One EM iteration on ``y [S, T, F, C]`` given the (rescaled) mixture ``[T, F, C]``."""
    if mix.shape[-1] == 2:
        return _em_step_stereo(y, mix, eps)
    n_chan = mix.shape[-1]
    power = jnp.mean(jnp.real(y) ** 2 + jnp.imag(y) ** 2, axis=-1)  # v: [S, T, F]
    # R_s(f) = sum_t y y^H / (eps + sum_t v): [S, F, C, C]
    outer = jnp.sum(y[..., :, None] * jnp.conj(y[..., None, :]), axis=1)
    spatial = outer / (eps + jnp.sum(power, axis=1))[..., None, None]
    # Cxx(t, f) = sum_s v_s R_s + sqrt(eps) I: [T, F, C, C]
    mix_cov = jnp.einsum("stf,sfcd->tfcd", power.astype(y.dtype), spatial)
    mix_cov = mix_cov + float(np.sqrt(eps)) * jnp.eye(n_chan, dtype=y.dtype)
    # y_s = v_s R_s Cxx^-1 x, applied right to left so no [S, T, F, C, C] gain is built.
    whitened = jnp.einsum("tfcd,tfd->tfc", _invert(mix_cov, eps, style), mix)
    return power[..., None] * jnp.einsum("sfcd,tfd->stfc", spatial, whitened)


def _em_step_stereo(y: jax.Array, mix: jax.Array, eps: float) -> jax.Array:
    """:func:`_em_step` for C = 2 written out per entry, so XLA fuses it into a few loops.

    All covariances are Hermitian (the references' are too, exactly: their diagonals have zero
    imaginary part and ``R[1, 0] == conj(R[0, 1])`` bit for bit), so only ``00``, ``11`` (real)
    and ``01`` are kept; the 2x2 inverse is the closed form ``[[d, -b], [-b*, a]] / (ad - |b|^2)``.
    """
    y0, y1 = y[..., 0], y[..., 1]
    pow0 = jnp.real(y0) ** 2 + jnp.imag(y0) ** 2
    pow1 = jnp.real(y1) ** 2 + jnp.imag(y1) ** 2
    power = 0.5 * (pow0 + pow1)  # v_s(t, f): [S, T, F]
    weight = eps + jnp.sum(power, axis=1)  # [S, F]
    r00 = jnp.sum(pow0, axis=1) / weight
    r11 = jnp.sum(pow1, axis=1) / weight
    r01 = jnp.sum(y0 * jnp.conj(y1), axis=1) / weight
    reg = float(np.sqrt(eps))
    c00 = jnp.sum(power * r00[:, None], axis=0) + reg  # [T, F]
    c11 = jnp.sum(power * r11[:, None], axis=0) + reg
    c01 = jnp.sum(power * r01[:, None], axis=0)
    inv_det = 1.0 / (c00 * c11 - (jnp.real(c01) ** 2 + jnp.imag(c01) ** 2))
    x0, x1 = mix[..., 0], mix[..., 1]
    z0 = (c11 * x0 - c01 * x1) * inv_det  # Cxx^-1 x
    z1 = (c00 * x1 - jnp.conj(c01) * x0) * inv_det
    out0 = power * (r00[:, None] * z0 + r01[:, None] * z1)
    out1 = power * (jnp.conj(r01)[:, None] * z0 + r11[:, None] * z1)
    return jnp.stack([out0, out1], axis=-1)


def _invert(matrices: jax.Array, eps: float, style: str) -> jax.Array:
    """Inverse of ``[..., C, C]`` for C != 2: closed form for C = 1 (as each reference), else LU."""
    n_chan = matrices.shape[-1]
    if n_chan == 1:
        return 1.0 / (matrices + eps) if style == "norbert" else 1.0 / matrices
    return jnp.linalg.inv(matrices)

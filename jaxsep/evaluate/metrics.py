"""Separation metrics, reference first: MDX SDR, SI-SDR and museval's BSSEval v4.

`sdr` and `si_sdr` take numpy arrays (evaluation: computed in float64) or jax arrays (training
and jitted evaluation: computed in the input dtype, traceable under `jax.jit`). `bss_eval` is a
thin, validated bridge to `museval.evaluate` so reported numbers are the SiSEC/MUSDB ones.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from jaxsep.errors import JaxsepError

Array = np.ndarray | jax.Array

METRIC_NAMES = ("SDR", "ISR", "SIR", "SAR")


def _backend(reference: Array, estimate: Array, what: str):
    """Pick jnp for jax inputs (incl. tracers) and float64 numpy otherwise; check shapes."""
    if np.shape(reference) != np.shape(estimate):
        raise JaxsepError(
            f"{what}: reference shape {tuple(np.shape(reference))} != "
            f"estimate shape {tuple(np.shape(estimate))}"
        )
    if isinstance(reference, jax.Array) or isinstance(estimate, jax.Array):
        dtype = jnp.result_type(reference, estimate, jnp.float32)
        return jnp, jnp.asarray(reference, dtype), jnp.asarray(estimate, dtype)
    return np, np.asarray(reference, np.float64), np.asarray(estimate, np.float64)


def sdr(reference: Array, estimate: Array, *, eps: float = 1e-7) -> Array:
    """MDX-challenge SDR in dB of one source, over all samples and channels.

    `10 log10((sum ref^2 + eps) / (sum (ref - est)^2 + eps))` on `[..., T, C]`, batched over the
    leading axes. Unlike BSSEval it allows no filtering or rescaling, which is why MDX chose it:
    fast, and a perfect estimate gives a large finite value rather than inf. The MDX per-song
    "Total" is the mean of this over the sources of a `[S, T, C]` song.
    """
    xp, ref, est = _backend(reference, estimate, "sdr")
    if ref.ndim < 2:
        raise JaxsepError(f"sdr: expected [..., time, channels], got shape {tuple(ref.shape)}")
    signal = xp.sum(ref**2, axis=(-2, -1))
    distortion = xp.sum((ref - est) ** 2, axis=(-2, -1))
    return 10.0 * xp.log10((signal + eps) / (distortion + eps))


def si_sdr(
    reference: Array,
    estimate: Array,
    *,
    zero_mean: bool = True,
    eps: float | None = None,
    axis: int = -1,
) -> Array:
    """Scale-invariant SDR in dB along `axis` (time), batched over the other axes.

    alpha = <est, ref> / ||ref||^2, SI-SDR = 10 log10(||alpha ref||^2 / ||est - alpha ref||^2),
    after removing each signal's mean when `zero_mean` (so a DC offset is not counted as error).

    `eps=None` picks the convention of each path: numpy inputs get the exact float64 formula of
    nussl's evaluation (`BSSEvalScale`, no epsilon: a perfect estimate gives inf, a silent
    reference NaN); jax inputs get asteroid's training-loss guard (1e-8 added to ||ref||^2, to
    the noise energy and inside the log) so gradients stay finite. Pass a number to use that
    epsilon on either path.
    """
    xp, ref, est = _backend(reference, estimate, "si_sdr")
    if ref.ndim == 0:
        raise JaxsepError("si_sdr: expected at least one (time) axis, got a scalar")
    if eps is None:
        eps = 1e-8 if xp is jnp else 0.0
    if zero_mean:
        ref = ref - xp.mean(ref, axis=axis, keepdims=True)
        est = est - xp.mean(est, axis=axis, keepdims=True)
    dot = xp.sum(est * ref, axis=axis, keepdims=True)
    ref_energy = xp.sum(ref**2, axis=axis, keepdims=True) + eps
    target = dot * ref / ref_energy
    noise = est - target
    ratio = xp.sum(target**2, axis=axis) / (xp.sum(noise**2, axis=axis) + eps)
    if xp is np:
        with np.errstate(divide="ignore", invalid="ignore"):
            return 10.0 * np.log10(ratio + eps)
    return 10.0 * jnp.log10(ratio + eps)


@dataclass(frozen=True)
class BSSEvalScores:
    """Framewise BSSEval v4 scores, each `[sources, frames]` (NaN where a frame is silent)."""

    sdr: np.ndarray
    isr: np.ndarray
    sir: np.ndarray
    sar: np.ndarray

    def framewise(self) -> dict[str, np.ndarray]:
        """`{"SDR": [S, frames], "ISR": ..., "SIR": ..., "SAR": ...}`."""
        return dict(zip(METRIC_NAMES, (self.sdr, self.isr, self.sir, self.sar)))

    def medians(self) -> dict[str, np.ndarray]:
        """Per-source median over frames, ignoring NaN frames (museval's `np.nanmedian`).

        A source whose frames are all silent gets NaN, as museval's aggregation does.
        """
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows -> NaN, as museval
            return {name: np.nanmedian(v, axis=-1) for name, v in self.framewise().items()}


# jax: jaxsep.evaluate.bsseval, museval's scores to ~1e-12 dB and ~30x faster on 2 CPU cores
# (benchmarks/README.md); museval: the reference package itself
BSSEVAL_BACKENDS = ("jax", "museval")


def bss_eval(
    references: np.ndarray,
    estimates: np.ndarray,
    sample_rate: float,
    *,
    window: float = 1.0,
    hop: float = 1.0,
    backend: str = "museval",
) -> BSSEvalScores:
    """BSSEval v4 (images mode, `museval.evaluate`) of `[S, T, C]` estimates against references.

    `window` and `hop` are in seconds (MUSDB/SiSEC use 1 s and 1 s). Distortion filters are
    computed once on the whole signals (v4), scores per window; no permutation search.
    `backend="jax"` runs `jaxsep.evaluate.bsseval.bss_eval_v4` (same scores, many times faster).
    """
    if backend not in BSSEVAL_BACKENDS:
        raise JaxsepError(
            f"bss_eval: unknown backend {backend!r} (use one of {', '.join(BSSEVAL_BACKENDS)})"
        )
    # float32 stays float32 here: the JAX backend casts chunk by chunk (a 6-minute 4-stem track
    # is 1 GB per float64 copy); museval gets float64 copies below
    refs, ests = (_float_array(a) for a in (references, estimates))
    if refs.ndim != 3 or ests.ndim != 3:
        raise JaxsepError(
            f"bss_eval: expected [sources, time, channels] arrays, got reference shape "
            f"{refs.shape} and estimate shape {ests.shape}"
        )
    if refs.shape != ests.shape:
        raise JaxsepError(
            f"bss_eval: reference shape {refs.shape} != estimate shape {ests.shape} "
            "(same sources, length and channels required)"
        )
    if not (sample_rate > 0 and window > 0 and hop > 0):
        raise JaxsepError(
            f"bss_eval: sample_rate, window and hop must be positive, got "
            f"{sample_rate}, {window}, {hop}"
        )
    if not (np.all(np.isfinite(refs)) and np.all(np.isfinite(ests))):
        raise JaxsepError("bss_eval: references or estimates contain NaN or inf")
    win, hop_samples = int(round(window * sample_rate)), int(round(hop * sample_rate))
    if backend == "jax":
        for what, signals in (("reference", refs), ("estimated", ests)):
            channel_sum = np.sum(signals, axis=2, dtype=np.float64)
            silent = np.flatnonzero(np.all(channel_sum == 0, axis=1))
            if silent.size:  # museval's check and wording: BSSEval is undefined then
                raise JaxsepError(
                    f"bss_eval: all the {what} sources should be non-silent (not all-zeros), "
                    f"but source {int(silent[0])} is all 0s"
                )
        from jaxsep.evaluate.bsseval import bss_eval_v4

        return BSSEvalScores(*bss_eval_v4(refs, ests, window=win, hop=hop_samples))
    import museval  # deferred: importing it needs ffmpeg on PATH and is slow

    try:
        scores = museval.evaluate(
            np.asarray(refs, np.float64),
            np.asarray(ests, np.float64),
            win=win,
            hop=hop_samples,
            mode="v4",
            padding=False,
        )
    except ValueError as error:  # e.g. an all-zero source: BSSEval is undefined
        message = " ".join(str(error).split())
        raise JaxsepError(f"bss_eval: {message}") from None
    return BSSEvalScores(*(np.asarray(s, np.float64) for s in scores))


def _float_array(signals: np.ndarray) -> np.ndarray:
    """`signals` as a numpy array of its float dtype (no copy), or float64 if not a float."""
    signals = np.asarray(signals)
    return signals if np.issubdtype(signals.dtype, np.floating) else signals.astype(np.float64)

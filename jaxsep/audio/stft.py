"""Short-time Fourier transform and its inverse in pure jnp, jit-able on any backend.

Two conventions are needed because converted weights must see bit-compatible spectrograms:

* torch (``scaling=None``): ``torch.stft`` / ``torch.istft`` with ``normalized=False``,
  ``onesided=True`` -- what Open-Unmix and X-UMX use (``center=True``, ``pad_mode="reflect"``).
* scipy (``scaling="spectrum"``, ``pad_mode="constant"``, ``pad_end=True``): ``scipy.signal.stft``
  with ``boundary="zeros"``, ``padded=True`` -- what nussl / ChimeraNet use. The spectrum is
  divided by the window sum. :func:`scipy_stft` and :func:`scipy_istft` set all of this at once.

Spectrograms are ``[..., frames, bins]`` complex64 for a real signal ``[..., time]``. Framing and
overlap-add are reshapes of hop-sized blocks (no gather, no convolution) whenever
``n_fft % hop == 0``; the iSTFT window envelope is a numpy constant folded into the program.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

WindowLike = str | np.ndarray | jnp.ndarray
Scaling = Literal["spectrum"] | None

_SCALINGS = (None, "spectrum")
_PAD_MODES = ("reflect", "constant")
# torch.istft raises below this envelope value; scipy uses 1e-10. We divide only where the
# envelope is above it (the samples there have no window support, so they stay 0).
_ENVELOPE_FLOOR = 1e-11


def get_window(name: str, n: int) -> np.ndarray:
    """A periodic (DFT-even) window of length ``n`` as float32, matching torch and scipy.

    ``"hann"`` equals ``torch.hann_window(n)`` and ``scipy.signal.get_window("hann", n)``;
    ``"sqrt_hann"`` is its square root (nussl's analysis/synthesis window); ``"hamming"``
    equals ``torch.hamming_window(n)``; ``"boxcar"`` is all ones.
    """
    phase = 2.0 * np.pi * np.arange(n, dtype=np.float64) / n
    if name == "hann":
        window = 0.5 - 0.5 * np.cos(phase)
    elif name == "sqrt_hann":
        window = np.sqrt(0.5 - 0.5 * np.cos(phase))
    elif name == "hamming":
        window = 0.54 - 0.46 * np.cos(phase)
    elif name in ("boxcar", "rect", "ones"):
        window = np.ones(n)
    else:
        raise ValueError(f"unknown window {name!r}; use hann, sqrt_hann, hamming or boxcar")
    return window.astype(np.float32)


def _resolve_window(window: WindowLike, n_fft: int) -> jnp.ndarray | np.ndarray:
    """Window as a length-``n_fft`` array; a shorter one is zero-padded centred, as torch does.

    Returns numpy when the window is concrete (so the iSTFT envelope can be a constant) and a
    jnp array when it is traced (a window passed into a jitted function as an argument).
    """
    if isinstance(window, str):
        return get_window(window, n_fft)
    try:
        window = np.asarray(window, dtype=np.float32)
        xp = np
    except jax.errors.TracerArrayConversionError:  # passed into jit as an argument
        window = jnp.asarray(window, dtype=jnp.float32)
        xp = jnp
    if window.ndim != 1 or window.shape[0] > n_fft:
        raise ValueError(
            f"window must be 1-D with at most n_fft={n_fft} samples, got {window.shape}"
        )
    left = (n_fft - window.shape[0]) // 2
    return xp.pad(window, (left, n_fft - window.shape[0] - left))


def _check_args(n_fft: int, hop: int, scaling: Scaling) -> None:
    if n_fft <= 0 or hop <= 0:
        raise ValueError(f"n_fft and hop must be positive, got n_fft={n_fft}, hop={hop}")
    if scaling not in _SCALINGS:
        raise ValueError(f"scaling must be None (torch) or 'spectrum' (scipy), got {scaling!r}")


def _frame(x: jnp.ndarray, n_fft: int, hop: int) -> jnp.ndarray:
    """``[..., L]`` -> ``[..., frames, n_fft]`` with frame ``i`` starting at ``i * hop``."""
    n_frames = 1 + (x.shape[-1] - n_fft) // hop
    if n_fft % hop == 0:
        # Gather-free: cut into hop-sized blocks, then frame i = blocks i .. i+r-1 side by side.
        ratio = n_fft // hop
        n_blocks = n_frames + ratio - 1
        blocks = x[..., : n_blocks * hop].reshape(*x.shape[:-1], n_blocks, hop)
        shifted = jnp.stack([blocks[..., k : k + n_frames, :] for k in range(ratio)], axis=-2)
        return shifted.reshape(*x.shape[:-1], n_frames, n_fft)
    index = np.arange(n_frames)[:, None] * hop + np.arange(n_fft)[None, :]
    return x[..., index]


def _overlap_add(frames: jnp.ndarray, hop: int) -> jnp.ndarray:
    """Inverse of :func:`_frame` with summation: ``[..., n, win]`` -> ``[..., (n-1)*hop + win]``.

    Each frame is zero-padded to ``ratio * hop`` samples and split into ``ratio`` hop blocks;
    block ``k`` of frame ``i`` lands on output block ``i + k``, so the sum is ``ratio`` shifted
    pads -- a reshape-and-sum with no scatter.
    """
    n_frames, win = frames.shape[-2:]
    ratio = math.ceil(win / hop)
    lead = [(0, 0)] * (frames.ndim - 2)
    frames = jnp.pad(frames, lead + [(0, 0), (0, ratio * hop - win)])
    blocks = frames.reshape(*frames.shape[:-1], ratio, hop)
    out = sum(jnp.pad(blocks[..., k, :], lead + [(k, ratio - 1 - k), (0, 0)]) for k in range(ratio))
    out = out.reshape(*out.shape[:-2], (n_frames + ratio - 1) * hop)
    return out[..., : (n_frames - 1) * hop + win]


def _window_envelope(win: np.ndarray, hop: int, n_frames: int) -> np.ndarray:
    """Overlap-added squared window, in float64 numpy and O(signal) memory.

    All frames share the window, so output block ``j`` is the sum of the window's hop blocks
    ``k`` with ``0 <= j - k < n_frames``.
    """
    n_fft = win.shape[0]
    ratio = math.ceil(n_fft / hop)
    squared = np.zeros(ratio * hop)
    squared[:n_fft] = win.astype(np.float64) ** 2
    blocks = np.zeros((n_frames + ratio - 1, hop))
    for k, block in enumerate(squared.reshape(ratio, hop)):
        blocks[k : k + n_frames] += block
    return blocks.reshape(-1)[: (n_frames - 1) * hop + n_fft]


def stft(
    x: jnp.ndarray,
    n_fft: int,
    hop: int,
    window: WindowLike = "hann",
    *,
    center: bool = True,
    pad_mode: str = "reflect",
    pad_end: bool = False,
    scaling: Scaling = None,
) -> jnp.ndarray:
    """Complex spectrogram ``[..., frames, n_fft // 2 + 1]`` (complex64) of real ``x [..., T]``.

    Args:
      x: real signal, any leading batch axes.
      n_fft: FFT size (= frame length).
      hop: hop length in samples.
      window: a window name for :func:`get_window` or an array of at most ``n_fft`` samples.
      center: pad ``n_fft // 2`` samples on both sides so frame ``t`` is centred on ``t * hop``
        (torch ``center=True``; scipy ``boundary`` not None).
      pad_mode: ``"reflect"`` or ``"constant"`` (zeros) for the ``center`` padding.
      pad_end: also zero-pad the end so the last partial hop gets a frame (scipy
        ``padded=True``); torch drops it.
      scaling: ``None`` = unnormalised (torch); ``"spectrum"`` divides by the window sum (scipy).

    torch.stft equals ``stft(x, n_fft, hop, w, center=c, pad_mode=m)``; scipy.signal.stft with
    ``boundary="zeros", padded=True`` equals :func:`scipy_stft`. Unlike scipy, no "detrend" and
    ``nperseg == nfft`` always.
    """
    _check_args(n_fft, hop, scaling)
    if pad_mode not in _PAD_MODES:
        raise ValueError(f"pad_mode must be one of {_PAD_MODES}, got {pad_mode!r}")
    x = jnp.asarray(x, dtype=jnp.float32)
    length = x.shape[-1]
    if center:
        half = n_fft // 2
        if pad_mode == "reflect" and length <= half:
            raise ValueError(f"reflect padding needs more than {half} samples, got {length}")
        length += 2 * half
    if pad_end:
        length += (-(length - n_fft)) % hop
    if length < n_fft:
        raise ValueError(f"signal of {length} samples (after padding) is shorter than n_fft")
    win = _resolve_window(window, n_fft)
    return _stft(x, win, n_fft, hop, center, pad_mode, pad_end, scaling)


# One compiled program per configuration: eager callers avoid op-by-op dispatch, and inside an
# outer jit this is simply inlined.
@partial(jax.jit, static_argnums=(2, 3, 4, 5, 6, 7))
def _stft(x, win, n_fft, hop, center, pad_mode, pad_end, scaling):
    lead = [(0, 0)] * (x.ndim - 1)
    if center:
        x = jnp.pad(x, lead + [(n_fft // 2, n_fft // 2)], mode=pad_mode)
    if pad_end:
        x = jnp.pad(x, lead + [(0, (-(x.shape[-1] - n_fft)) % hop)])
    spec = jnp.fft.rfft(_frame(x, n_fft, hop) * win, n=n_fft, axis=-1)
    if scaling == "spectrum":
        spec = spec / jnp.sum(win)
    return spec.astype(jnp.complex64)


def istft(
    spec: jnp.ndarray,
    n_fft: int,
    hop: int,
    window: WindowLike = "hann",
    *,
    center: bool = True,
    length: int | None = None,
    scaling: Scaling = None,
) -> jnp.ndarray:
    """Real signal ``[..., T]`` (float32) from a spectrogram ``[..., frames, n_fft // 2 + 1]``.

    Weighted overlap-add: inverse FFT, multiply by the window, overlap-add, divide by the
    overlap-added squared window (a numpy constant). With ``center`` the first and last
    ``n_fft // 2`` samples are dropped; ``length`` then trims or zero-pads the result, as
    ``torch.istft`` does. ``scaling="spectrum"`` undoes :func:`stft`'s division by the window
    sum, which makes this ``scipy.signal.istft`` (``boundary=True``) for ``center=True``.
    """
    _check_args(n_fft, hop, scaling)
    spec = jnp.asarray(spec)
    n_frames = spec.shape[-2]
    win = _resolve_window(window, n_fft)
    start = n_fft // 2 if center else 0
    if length is not None:
        stop = start + length
    else:
        stop = (n_frames - 1) * hop + n_fft - start
    if isinstance(win, np.ndarray):  # the usual case: the envelope is a trace-time constant
        envelope = _window_envelope(win, hop, n_frames)[start:stop]
        envelope = np.where(envelope > _ENVELOPE_FLOOR, envelope, 1.0).astype(np.float32)
    else:
        envelope = _overlap_add(jnp.broadcast_to(win**2, (n_frames, n_fft)), hop)[start:stop]
        envelope = jnp.where(envelope > _ENVELOPE_FLOOR, envelope, 1.0)
    return _istft(spec, win, envelope, n_fft, hop, start, stop, length, scaling)


@partial(jax.jit, static_argnums=(3, 4, 5, 6, 7, 8))
def _istft(spec, win, envelope, n_fft, hop, start, stop, length, scaling):
    frames = jnp.fft.irfft(spec, n=n_fft, axis=-1).astype(jnp.float32)
    if scaling == "spectrum":
        frames = frames * jnp.sum(win)
    signal = _overlap_add(frames * win, hop)[..., start:stop] / envelope
    if length is not None and signal.shape[-1] < length:
        lead = [(0, 0)] * (signal.ndim - 1)
        signal = jnp.pad(signal, lead + [(0, length - signal.shape[-1])])
    return signal


def scipy_stft(x: jnp.ndarray, n_fft: int, hop: int, window: WindowLike = "hann") -> jnp.ndarray:
    """``scipy.signal.stft(x, nperseg=n_fft, noverlap=n_fft-hop, boundary="zeros", padded=True)``,
    transposed to ``[..., frames, bins]``: nussl's ``AudioSignal.stft``."""
    return stft(
        x, n_fft, hop, window, center=True, pad_mode="constant", pad_end=True, scaling="spectrum"
    )


def scipy_istft(
    spec: jnp.ndarray,
    n_fft: int,
    hop: int,
    window: WindowLike = "hann",
    *,
    length: int | None = None,
) -> jnp.ndarray:
    """``scipy.signal.istft(..., boundary=True)`` of a ``[..., frames, bins]`` spectrogram;
    with ``length`` = the original length this is nussl's ``AudioSignal.istft``."""
    return istft(spec, n_fft, hop, window, center=True, length=length, scaling="spectrum")

"""VGGish log-mel front end: 16 kHz waveform -> non-overlapping 96 x 64 log-mel examples.

One implementation serves two array namespaces: a numpy array runs in float64 on the host and
matches the reference (TF ``mel_features.py`` / torchvggish ``vggish_input.py``) to rounding; a
jax array (or a tracer inside ``jax.jit``) runs in jnp at its own dtype, so augmented stems can
be embedded inside a train step. Leading batch axes are kept: ``[..., T] -> [..., N, 96, 64]``.

Reference semantics (VGGish ``vggish_params.py``):

* STFT: 400-sample (25 ms) frames every 160 samples (10 ms), no padding or centring, so a
  signal of ``T >= 400`` samples has ``1 + (T - 400) // 160`` frames; periodic Hann
  ``0.5 - 0.5 cos(2 pi n / 400)``; 512-point ``|rfft|`` (magnitude, not power), 257 bins.
* mel: 64 HTK-mel triangles (``1127 ln(1 + f / 700)``) between 125 and 7500 Hz whose slopes are
  evaluated in the *mel* domain at the bin frequencies ``linspace(0, 8000, 257)``; no area
  normalisation; the DC row is zeroed. This is not librosa's filter bank (librosa draws the
  triangles in Hz), hence the own construction.
* ``ln(mel + 0.01)``.
* examples: consecutive non-overlapping blocks of 96 frames (0.96 s). Frames after the last
  complete block are dropped (298 frames -> 3 examples, frames 288..297 unused); a signal
  shorter than one block gives zero examples.

Resampling to 16 kHz stays on the host (:func:`waveform_to_examples`) and uses resampy's
``kaiser_best``, as the reference does: soxr differs in the 7-8 kHz transition band, which moves
the top mel bands by up to 0.5 in log-mel.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from jaxsep.errors import JaxsepError

if TYPE_CHECKING:
    import jax

    Array = np.ndarray | jax.Array

SAMPLE_RATE = 16000
WINDOW_LENGTH = 400  # 0.025 s
HOP_LENGTH = 160  # 0.010 s
FFT_LENGTH = 512  # next power of two above the window
NUM_BANDS = 64
MEL_MIN_HZ = 125.0
MEL_MAX_HZ = 7500.0
LOG_OFFSET = 0.01
EXAMPLE_FRAMES = 96  # 0.96 s, also the hop between examples

_MEL_BREAK_HZ = 700.0
_MEL_HIGH_Q = 1127.0


def hz_to_mel(frequencies_hz: np.ndarray) -> np.ndarray:
    """HTK mel scale, natural-log form, as VGGish uses it."""
    return _MEL_HIGH_Q * np.log1p(np.asarray(frequencies_hz, np.float64) / _MEL_BREAK_HZ)


def periodic_hann(window_length: int = WINDOW_LENGTH) -> np.ndarray:
    """``0.5 - 0.5 cos(2 pi n / N)`` for n < N (the periodic Hann, float64)."""
    n = np.arange(window_length, dtype=np.float64)
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * n / window_length)


def mel_matrix(
    num_bands: int = NUM_BANDS,
    num_bins: int = FFT_LENGTH // 2 + 1,
    sample_rate: int = SAMPLE_RATE,
    lower_hz: float = MEL_MIN_HZ,
    upper_hz: float = MEL_MAX_HZ,
) -> np.ndarray:
    """``[num_bins, num_bands]`` float64 weights: ``magnitude @ W`` gives the mel spectrogram."""
    nyquist = sample_rate / 2.0
    if not 0.0 <= lower_hz < upper_hz <= nyquist:
        raise ValueError(f"need 0 <= lower_hz < upper_hz <= {nyquist}, got {lower_hz}, {upper_hz}")
    bins_mel = hz_to_mel(np.linspace(0.0, nyquist, num_bins))[:, None]
    edges = np.linspace(hz_to_mel(lower_hz), hz_to_mel(upper_hz), num_bands + 2)
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bins_mel - lower) / (center - lower)
    falling = (upper - bins_mel) / (upper - center)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights[0, :] = 0.0  # the DC bin carries no band energy in VGGish
    return weights


def _namespace(x):
    """numpy for host arrays (float64 reference path), jax.numpy for jax arrays and tracers."""
    if isinstance(x, np.ndarray | np.generic | list | tuple):
        return np
    import jax.numpy as jnp

    return jnp


def _host_float(x) -> np.ndarray:
    """Host input as float64, the reference's working precision (it casts to float64 first)."""
    return np.asarray(x, dtype=np.float64)


def stft_magnitude(wave16k: Array) -> Array:
    """``[..., T]`` -> ``[..., frames, 257]`` VGGish STFT magnitude (no padding, periodic Hann)."""
    xp = _namespace(wave16k)
    if xp is np:
        wave16k = _host_float(wave16k)
    length = wave16k.shape[-1]
    if length < WINDOW_LENGTH:
        frames = 0
    else:
        frames = 1 + (length - WINDOW_LENGTH) // HOP_LENGTH
    index = HOP_LENGTH * np.arange(frames)[:, None] + np.arange(WINDOW_LENGTH)[None, :]
    window = periodic_hann().astype(wave16k.dtype)
    framed = wave16k[..., index] * window
    return xp.abs(xp.fft.rfft(framed, n=FFT_LENGTH, axis=-1))


def log_mel_spectrogram(wave16k: Array) -> Array:
    """``[..., T]`` -> ``[..., frames, 64]``: ``ln(|STFT| @ mel_matrix + 0.01)``."""
    xp = _namespace(wave16k)
    magnitude = stft_magnitude(wave16k)
    weights = mel_matrix().astype(magnitude.dtype)
    return xp.log(xp.matmul(magnitude, weights) + LOG_OFFSET)


def frame_examples(log_mel_frames: Array) -> Array:
    """``[..., frames, 64]`` -> ``[..., frames // 96, 96, 64]``; the incomplete tail is dropped."""
    frames = log_mel_frames.shape[-2]
    count = frames // EXAMPLE_FRAMES
    kept = log_mel_frames[..., : count * EXAMPLE_FRAMES, :]
    return kept.reshape(*kept.shape[:-2], count, EXAMPLE_FRAMES, kept.shape[-1])


def log_mel(wave16k: Array) -> Array:
    """``[..., T]`` 16 kHz mono -> ``[..., N, 96, 64]`` VGGish input examples.

    numpy input runs in float64 on the host and returns float32 (as the reference feeds the
    network); jax input stays in jnp at its dtype and works under ``jax.jit``.
    """
    examples = frame_examples(log_mel_spectrogram(wave16k))
    if _namespace(wave16k) is np:
        return examples.astype(np.float32)
    return examples


def waveform_to_examples(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Host path of the reference: ``[time]`` or ``[time, channels]`` at any rate -> examples.

    Channels are averaged (float64), the signal is resampled to 16 kHz with resampy
    ``kaiser_best`` (the reference's resampler), then :func:`log_mel` runs in float64.
    """
    audio = np.asarray(audio)
    if audio.ndim not in (1, 2) or audio.size == 0:
        raise JaxsepError(
            f"VGGish input must be a non-empty [time] or [time, channels] array, "
            f"got shape {audio.shape}"
        )
    mono = _host_float(audio)
    if mono.ndim == 2:
        mono = mono.mean(axis=1)
    if sample_rate != SAMPLE_RATE:
        import resampy  # host only; numba-compiled, imported lazily

        mono = resampy.resample(mono, int(sample_rate), SAMPLE_RATE, filter="kaiser_best")
    return log_mel(mono)

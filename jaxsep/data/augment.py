"""Host-side (numpy) data augmentation of single stems, driven by a passed-in numpy Generator.

Every random choice is drawn from the generator grain hands to ``random_map``, so an augmented
example is a pure function of ``(seed, index)``: deterministic, and reproducible after a
checkpoint restore. Stems are augmented independently and re-mixed by the excerpt sampler.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

EDGE_FRAMES = 4096  # two librosa phase-vocoder windows (n_fft=2048)


@dataclass(frozen=True)
class StemAugment:
    """The drawn parameters for one stem of one example."""

    gain: float = 1.0
    swap_channels: bool = False
    semitones: float = 0.0
    stretch: float = 1.0  # librosa's ``rate``: > 1 plays faster (shorter)

    def input_frames(self, frames: int) -> int:
        """Frames to read so that the stretched stem covers ``frames`` output frames.

        The phase vocoder fades the last half window out, so ``EDGE_FRAMES`` more are read and
        cropped away: no excerpt ends in an artificial fade or silence.
        """
        if self.stretch == 1.0 and self.semitones == 0.0:
            return frames
        return int(math.ceil(frames * self.stretch)) + EDGE_FRAMES


@dataclass(frozen=True)
class Augmentation:
    """Which augmentations are on, and their ranges (defaults: the X-UMX/UMX recipe's values).

    ``Augmentation()`` changes nothing; ``Augmentation(gain=True, channel_swap=True)`` is the UMX
    training augmentation. With ``shared_pitch_and_tempo`` one pitch shift and one stretch rate
    are drawn per example and used for every stem (keeps a coherent mix in tune and in time).
    """

    gain: bool = False
    channel_swap: bool = False
    pitch_shift: bool = False
    time_stretch: bool = False
    gain_range: tuple[float, float] = (0.25, 1.25)
    swap_probability: float = 0.5
    semitone_range: tuple[float, float] = (-3.0, 3.0)
    stretch_range: tuple[float, float] = (0.8, 1.2)
    shared_pitch_and_tempo: bool = False

    @property
    def enabled(self) -> bool:
        return self.gain or self.channel_swap or self.pitch_shift or self.time_stretch

    def draw(self, rng: np.random.Generator, num_stems: int) -> list[StemAugment]:
        """Draw the parameters of ``num_stems`` stems (only the enabled ones consume the rng)."""
        shared = self._draw_pitch_tempo(rng) if self.shared_pitch_and_tempo else None
        params = []
        for _ in range(num_stems):
            gain = float(rng.uniform(*self.gain_range)) if self.gain else 1.0
            swap = bool(rng.random() < self.swap_probability) if self.channel_swap else False
            semitones, stretch = shared or self._draw_pitch_tempo(rng)
            params.append(StemAugment(gain, swap, semitones, stretch))
        return params

    def _draw_pitch_tempo(self, rng: np.random.Generator) -> tuple[float, float]:
        semitones = float(rng.uniform(*self.semitone_range)) if self.pitch_shift else 0.0
        stretch = float(rng.uniform(*self.stretch_range)) if self.time_stretch else 1.0
        return semitones, stretch


def apply_stem(audio: np.ndarray, params: StemAugment, sample_rate: int, frames: int) -> np.ndarray:
    """Augment one stem ``[T_in, C]`` (``T_in = params.input_frames(frames)``) -> ``[frames, C]``."""
    out = stretch_and_shift(audio, sample_rate, params.stretch, params.semitones)
    out = fix_length(out, frames)
    if params.swap_channels and out.shape[1] > 1:
        out = out[:, ::-1]
    if params.gain != 1.0:
        out = out * np.float32(params.gain)
    return np.ascontiguousarray(out, dtype=np.float32)


def stretch_and_shift(
    audio: np.ndarray, sample_rate: int, stretch: float, semitones: float
) -> np.ndarray:
    """Time-stretch by ``stretch`` and pitch-shift by ``semitones`` in one phase-vocoder pass.

    Same maths as ``librosa.effects.pitch_shift`` (stretch, then resample by the pitch ratio),
    with the tempo change folded into the stretch so a stem costs one STFT, not two.
    Output length is ``T / stretch``.
    """
    if stretch == 1.0 and semitones == 0.0:
        return audio
    import librosa  # here, not at the top: gain and channel swap need no librosa (GPU hosts)

    ratio = 2.0 ** (-semitones / 12.0)  # librosa's pitch-shift rate
    y = np.ascontiguousarray(audio.T)
    if stretch * ratio != 1.0:
        y = librosa.effects.time_stretch(y, rate=stretch * ratio)
    if semitones != 0.0:
        y = librosa.resample(
            y, orig_sr=float(sample_rate) / ratio, target_sr=sample_rate, res_type="soxr_hq"
        )
    return y.T.astype(np.float32)


def fix_length(audio: np.ndarray, frames: int) -> np.ndarray:
    """Crop or zero-pad ``[T, C]`` at the end to ``frames`` frames."""
    if audio.shape[0] >= frames:
        return audio[:frames]
    pad = np.zeros((frames - audio.shape[0], audio.shape[1]), audio.dtype)
    return np.concatenate([audio, pad])


def augment_stems(
    stems: Sequence[np.ndarray], params: Sequence[StemAugment], sample_rate: int, frames: int
) -> np.ndarray:
    """Augment each stem with its own parameters -> ``[S, frames, C]``."""
    return np.stack([apply_stem(x, p, sample_rate, frames) for x, p in zip(stems, params)])

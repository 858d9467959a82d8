"""Training excerpts: random crops of the stems of a track source, re-mixed after augmentation.

Coherent excerpts take every stem from one track at one offset (a real mix); incoherent ones take
each stem from an independent track and offset (UMX's "random track mixing"), which multiplies
the number of distinct mixtures a small corpus offers. Either way the mixture is the sum of the
(augmented) stems, so the training target and input always agree.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jaxsep.data.augment import Augmentation, StemAugment, augment_stems
from jaxsep.data.tracks import TrackSource
from jaxsep.errors import JaxsepError


def level_db(audio: np.ndarray) -> float:
    """RMS level in dB relative to full scale (-inf dB never returned: floor at -200)."""
    power = float(np.mean(np.square(audio, dtype=np.float64))) if audio.size else 0.0
    return 10.0 * np.log10(max(power, 1e-20))


class ExcerptSampler:
    """Draws ``{"mixture": [T, C], "sources": [S, T, C]}`` excerpts from a ``TrackSource``.

    ``stems`` are the target stems (in the order the model expects; default: all of the source's
    stems); the mixture sums *all* of the source's stems. An excerpt whose target stems are all
    quieter than ``silence_threshold_db`` is redrawn, up to ``max_tries`` draws in all (the last
    draw is kept), so a model is not trained on silence. ``silence_threshold_db=None`` keeps all.
    """

    def __init__(
        self,
        source: TrackSource,
        *,
        seconds: float | None = None,
        frames: int | None = None,
        stems: Sequence[str] | None = None,
        coherent: bool = True,
        silence_threshold_db: float | None = -60.0,
        max_tries: int = 10,
    ) -> None:
        if (seconds is None) == (frames is None):
            raise JaxsepError("ExcerptSampler: give exactly one of seconds= or frames=")
        self.source = source
        self.frames = int(frames) if frames is not None else round(seconds * source.sample_rate)
        if self.frames <= 0:
            raise JaxsepError(f"ExcerptSampler: excerpt length must be positive, got {self.frames}")
        self.stems = tuple(stems) if stems is not None else tuple(source.stems)
        unknown = [s for s in self.stems if s not in source.stems]
        if unknown:
            raise JaxsepError(f"ExcerptSampler: stems {unknown} not in the source's {source.stems}")
        self._targets = [source.stems.index(s) for s in self.stems]
        self.coherent = coherent
        self.silence_threshold_db = silence_threshold_db
        self.max_tries = max(1, int(max_tries))

    @property
    def sample_rate(self) -> int:
        return self.source.sample_rate

    @property
    def channels(self) -> int:
        return self.source.channels

    def sample(
        self, rng: np.random.Generator, augment: Augmentation | None = None
    ) -> dict[str, np.ndarray]:
        """One example; every random choice comes from ``rng``."""
        for attempt in range(self.max_tries):
            raw, params = self._draw(rng, augment)
            if attempt + 1 < self.max_tries and self._is_silent(raw):
                continue
            sources = augment_stems(raw, params, self.sample_rate, self.frames)
            return {"mixture": sources.sum(axis=0), "sources": sources[self._targets]}
        raise AssertionError("unreachable")  # pragma: no cover

    def _draw(
        self, rng: np.random.Generator, augment: Augmentation | None
    ) -> tuple[list[np.ndarray], list[StemAugment]]:
        num_stems = len(self.source.stems)
        if augment is not None and augment.enabled:
            params = augment.draw(rng, num_stems)
        else:
            params = [StemAugment()] * num_stems
        if self.coherent:
            picks = [self._pick(rng)] * num_stems
        else:
            picks = [self._pick(rng) for _ in range(num_stems)]
        raw = []
        for stem, (track, start_fraction), p in zip(self.source.stems, picks, params):
            frames = p.input_frames(self.frames)
            start = int(start_fraction * (max(self.source.num_frames(track) - frames, 0) + 1))
            raw.append(self.source.read(track, stem, start, frames))
        return raw, params

    def _pick(self, rng: np.random.Generator) -> tuple[int, float]:
        """A track and a start position as a fraction in [0, 1) of the room left for the crop.

        A fraction (not frames) because time stretching changes how many frames a stem reads.
        """
        return int(rng.integers(len(self.source))), float(rng.random())

    def _is_silent(self, raw: list[np.ndarray]) -> bool:
        if self.silence_threshold_db is None:
            return False
        return all(level_db(raw[t]) < self.silence_threshold_db for t in self._targets)

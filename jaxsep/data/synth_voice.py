"""A small formant singer: glottal saw -> 5 vowel resonators, full band at 44.1 kHz.

Why: GM voice patches are static "aah/ooh" ensembles; a solo-voice-like source with vibrato,
scoops, changing vowels and consonant noise gives the vocals stem more variety. The tables are
the classic Csound soprano/tenor formants (frequency Hz, bandwidth Hz, amplitude dB).
"""

from __future__ import annotations

import numpy as np
from scipy import signal

SAMPLE_RATE = 44100
FORMANTS = {  # voice -> vowel -> (freqs, bandwidths, amplitudes dB)
    "female": {
        "a": ((800, 1150, 2900, 3900, 4950), (80, 90, 120, 130, 140), (0, -6, -32, -20, -50)),
        "e": ((350, 2000, 2800, 3600, 4950), (60, 100, 120, 150, 200), (0, -20, -15, -40, -56)),
        "i": ((270, 2140, 2950, 3900, 4950), (60, 90, 100, 120, 120), (0, -12, -26, -26, -44)),
        "o": ((450, 800, 2830, 3800, 4950), (70, 80, 100, 130, 135), (0, -11, -22, -22, -50)),
        "u": ((325, 700, 2700, 3800, 4950), (50, 60, 170, 180, 200), (0, -16, -35, -40, -60)),
    },
    "male": {
        "a": ((650, 1080, 2650, 2900, 3250), (80, 90, 120, 130, 140), (0, -6, -7, -8, -22)),
        "e": ((400, 1700, 2600, 3200, 3580), (70, 80, 100, 120, 120), (0, -14, -12, -14, -20)),
        "i": ((290, 1870, 2800, 3250, 3540), (40, 90, 100, 120, 120), (0, -15, -18, -20, -30)),
        "o": ((400, 800, 2600, 2800, 3000), (40, 80, 100, 120, 120), (0, -10, -12, -12, -26)),
        "u": ((350, 600, 2700, 2900, 3300), (40, 60, 100, 120, 120), (0, -20, -17, -14, -26)),
    },
}
_AIR = signal.butter(2, 4000, "highpass", fs=SAMPLE_RATE, output="sos")


def _glottal_saw(f0: np.ndarray) -> np.ndarray:
    """Band-limited (PolyBLEP) falling saw for a per-sample f0 track."""
    dt = f0 / SAMPLE_RATE
    t = np.cumsum(dt) % 1.0
    saw = 1.0 - 2.0 * t
    lo, hi = t < dt, t > 1.0 - dt
    x = np.where(lo, t / np.maximum(dt, 1e-9), 0.0)
    saw += np.where(lo, x * x - 2 * x + 1, 0.0)  # smooth the discontinuity just after the wrap
    y = np.where(hi, (t - 1.0) / np.maximum(dt, 1e-9), 0.0)
    saw -= np.where(hi, y * y + 2 * y + 1, 0.0)  # ... and just before it
    return saw


def _resonate(x: np.ndarray, freqs, bands, amps_db) -> np.ndarray:
    out = np.zeros_like(x)
    for f, bw, a in zip(freqs, bands, amps_db, strict=True):
        r = np.exp(-np.pi * bw / SAMPLE_RATE)
        a1, a2 = -2 * r * np.cos(2 * np.pi * f / SAMPLE_RATE), r * r
        out += 10 ** (a / 20) * (1 - r) * signal.lfilter([1.0], [1.0, a1, a2], x)
    return out


def sing(
    notes: list[tuple[float, float, int, int]],
    seconds: float,
    voice: str,
    rng: np.random.Generator,
) -> np.ndarray:
    """Render monophonic `notes` (start s, duration s, midi, velocity) -> float32 `[samples, 2]`."""
    n_total = int(round(seconds * SAMPLE_RATE))
    dry = np.zeros(n_total + SAMPLE_RATE, np.float64)
    rate, depth = rng.uniform(4.8, 6.2), rng.uniform(25, 60)
    tilt = signal.butter(1, rng.uniform(1500, 3500), fs=SAMPLE_RATE, output="sos")
    brilliance = 10 ** (rng.uniform(-30, -20) / 20)
    for start, dur, pitch, vel in notes:
        begin = max(0, int(round(start * SAMPLE_RATE)))
        n = int(round((dur + 0.04) * SAMPLE_RATE))
        if begin >= n_total or n <= 0:
            continue
        t = np.arange(n) / SAMPLE_RATE
        cents = -rng.uniform(30, 120) * np.clip(1 - t / rng.uniform(0.05, 0.1), 0, 1)  # scoop
        delay = rng.uniform(0.12, 0.3)
        cents += depth * np.clip((t - delay) / 0.2, 0, 1) * np.sin(2 * np.pi * rate * t)
        cents += rng.normal(0, 4, n).cumsum() / np.sqrt(np.arange(1, n + 1)) * 0.5  # jitter
        f0 = 440.0 * 2 ** ((pitch - 69 + cents / 100) / 12)
        glottal = _glottal_saw(f0) + rng.normal(0, 0.05, n)  # + aspiration noise
        source = signal.sosfilt(tilt, glottal)
        freqs, bands, amps = FORMANTS[voice][str(rng.choice(list(FORMANTS[voice])))]
        shift = rng.uniform(0.95, 1.05)  # a slightly different vocal tract per note
        note = _resonate(source, [f * shift for f in freqs], bands, amps)
        air = signal.sosfilt(
            _AIR, glottal
        )  # breath/brilliance above 4 kHz: keeps the voice full band
        note += air * (brilliance * np.abs(note).max() / (np.abs(air).max() + 1e-9))
        attack, release = min(n // 4, int(0.03 * SAMPLE_RATE)), min(n // 3, int(0.06 * SAMPLE_RATE))
        envelope = np.ones(n)
        envelope[:attack] = np.linspace(0, 1, attack)
        envelope[n - release :] = np.linspace(1, 0, release)
        note *= envelope * (vel / 127) / (np.abs(note).max() + 1e-9)
        if rng.random() < 0.4:  # unvoiced consonant onset: a short high-passed noise burst
            m = int(rng.uniform(0.03, 0.08) * SAMPLE_RATE)
            hp = signal.butter(2, rng.uniform(3000, 6000), "highpass", fs=SAMPLE_RATE, output="sos")
            burst = signal.sosfilt(hp, rng.normal(0, 0.15, m)) * np.hanning(m)
            s0 = max(0, begin - m // 2)
            dry[s0 : s0 + m] += burst[: len(dry) - s0]
        dry[begin : begin + n] += note[: len(dry) - begin]
    return _room(dry, rng)[:n_total].astype(np.float32)


def _room(dry: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Synthetic stereo room: decorrelated exponentially decaying noise tails, plus the dry voice."""
    decay = rng.uniform(0.3, 1.2)  # RT60 in seconds
    n = int(decay * SAMPLE_RATE)
    envelope = 10 ** (-3 * np.arange(n) / n)
    wet_gain = rng.uniform(0.1, 0.35)
    out = np.empty((len(dry), 2))
    for ch in range(2):
        impulse = rng.normal(0, 1, n) * envelope
        impulse *= wet_gain / np.sqrt((impulse**2).sum())
        out[:, ch] = dry + signal.fftconvolve(dry, impulse)[: len(dry)]
    return out

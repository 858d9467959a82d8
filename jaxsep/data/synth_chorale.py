"""Bach chorales from the music21 corpus -> soprano/alto/tenor/bass tracks (Bach10 instruments).

Why: a real 4-voice score played by four distinct instruments is the Bach10-like fine-tuning domain
for transfer experiments, fully offline. Voices share one tempo map (fermatas held about 2.2x,
bar-wise rubato, final ritardando) so they stay aligned; `stripTies` merges tied notes first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jaxsep.data.synth_render import RoomSettings, Track

VOICES = ("soprano", "alto", "tenor", "bass")
BACH10_PROGRAMS = {
    "soprano": 40,
    "alto": 71,
    "tenor": 66,
    "bass": 70,
}  # violin, clarinet, t.sax, bassoon
SCORE_SUFFIXES = (".mxl", ".xml", ".krn")  # preference order when one chorale has several files
FERMATA_STRETCH = 2.2
RELEASE_SECONDS = 1.5  # rendered after the last note of a whole piece


@dataclass
class ChoraleScore:
    """Picklable 4-voice score: per voice (onset, length, midi, fermata) in quarter notes."""

    name: str
    voices: list[list[tuple[float, float, int, bool]]]
    bar_quarters: float
    length_quarters: float


def chorale_candidates() -> list[Path]:
    """All Bach scores in the music21 corpus, one file per chorale, sorted by name."""
    from music21 import corpus

    best: dict[str, Path] = {}
    for path in sorted(Path(p) for p in corpus.getComposer("bach")):
        if path.suffix not in SCORE_SUFFIXES:
            continue
        old = best.get(path.stem)
        if old is None or SCORE_SUFFIXES.index(path.suffix) < SCORE_SUFFIXES.index(old.suffix):
            best[path.stem] = path
    return [best[k] for k in sorted(best)]


def load_chorale(path: Path) -> ChoraleScore | None:
    """Parse one score; None unless it is a single 4-part score with notes in every part."""
    from music21 import converter, expressions, stream

    try:
        score = converter.parse(str(path))
    except Exception:  # noqa: BLE001 - a corpus file music21 cannot read is simply skipped
        return None
    if not isinstance(score, stream.Score) or len(score.parts) != 4:
        return None
    voices = []
    for part in score.parts:
        notes = []
        for n in part.stripTies().flatten().notes:
            fermata = any(isinstance(e, expressions.Fermata) for e in n.expressions)
            onset, length = float(n.offset), float(n.quarterLength)
            if length <= 0:
                continue
            for p in n.pitches:  # a chord (divisi) keeps all its notes in the same voice
                notes.append((onset, length, int(p.midi), fermata))
        if not notes:
            return None
        voices.append(notes)
    signatures = score.parts[0].recurse().getElementsByClass("TimeSignature")
    bar = float(signatures[0].barDuration.quarterLength) if signatures else 4.0
    end = max(on + ln for v in voices for on, ln, _, _ in v)
    return ChoraleScore(path.stem, voices, bar, end)


def _tempo_map(
    chorale: ChoraleScore, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, float]:
    """Breakpoints (quarters, seconds) shared by all voices; also the base tempo in bpm."""
    bpm = float(rng.uniform(60, 96))
    edges = sorted(
        {0.0, chorale.length_quarters}
        | {x for v in chorale.voices for on, ln, _, _ in v for x in (on, on + ln)}
    )
    held = [(on, on + ln) for v in chorale.voices for on, ln, _, f in v if f]
    n_bars = int(chorale.length_quarters // chorale.bar_quarters) + 2
    rubato = 1.0 + rng.uniform(-0.04, 0.04, size=n_bars)
    seconds = [0.0]
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        spq = 60.0 / bpm * rubato[int(a // chorale.bar_quarters)]
        if any(s <= a < e for s, e in held):
            spq *= FERMATA_STRETCH
        to_end = chorale.length_quarters - a
        if to_end < 4.0:  # final ritardando over the last 4 quarters
            spq *= 1.0 + 0.5 * (4.0 - to_end) / 4.0
        seconds.append(seconds[-1] + (b - a) * spq)
    return np.asarray(edges), np.asarray(seconds), bpm


def arrange_chorale(
    chorale: ChoraleScore, rng: np.random.Generator, seconds: float
) -> tuple[dict[str, list[Track]], RoomSettings, float, dict]:
    """Tracks per voice, the room, the rendered length (crop or whole + release) and metadata."""
    quarters, times, bpm = _tempo_map(chorale, rng)
    whole = float(times[-1]) + RELEASE_SECONDS
    length = whole if seconds <= 0 or seconds >= whole else float(seconds)
    jitter = float(rng.uniform(0.004, 0.012))
    stems = {}
    for ch, (voice, notes) in enumerate(zip(VOICES, chorale.voices, strict=True)):
        track = Track(
            channel=ch,
            program=BACH10_PROGRAMS[voice],
            pan=int(np.clip(64 + rng.normal(0, 15), 20, 108)),
            volume=int(rng.integers(90, 115)),
            reverb_send=int(rng.integers(30, 80)),
        )
        base_vel = float(rng.uniform(75, 100))
        for onset, dur, pitch, _ in notes:
            t0, t1 = np.interp([onset, onset + dur], quarters, times)
            if t0 >= length:
                continue
            t0 += rng.normal(0, jitter)
            vel = int(np.clip(round(base_vel + rng.normal(0, 6)), 1, 127))
            track.notes.append(
                (float(max(0.0, t0)), float(max(0.05, (t1 - t0) * 0.97)), pitch, vel)
            )
        stems[voice] = [track]
    room = RoomSettings(
        room_size=float(rng.uniform(0.3, 0.8)),
        damping=float(rng.uniform(0.2, 0.6)),
        width=float(rng.uniform(0.6, 1.0)),
        level=float(rng.uniform(0.4, 0.8)),
    )
    meta = {
        "chorale": chorale.name,
        "tempo_bpm": bpm,
        "whole_seconds": whole,
        "programs": dict(BACH10_PROGRAMS),
    }
    return stems, room, length, meta

"""Procedural pop song composer: one random song -> General MIDI tracks per stem.

Why procedural: real multitrack pop is not redistributable offline; a random style, key, tempo,
progression, drum/bass pattern, accompaniment and sung melody per song gives a separator the
stem-level structure (rhythmic drums, low bass, chordal other, monophonic vocals) to learn from.
Everything is drawn from the numpy Generator passed in, so a song is a pure function of its seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from jaxsep.data.synth_render import RoomSettings, Track

STEMS = ("drums", "bass", "other", "vocals")
KEY_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)
MINOR_SCALE = (0, 2, 3, 5, 7, 8, 10)

# chord = (root offset from the key, quality); qualities: maj, min, dom, maj7, min7
MAJOR_PROGRESSIONS = {
    "I-V-vi-IV": ((0, "maj"), (7, "maj"), (9, "min"), (5, "maj")),
    "I-IV-V-IV": ((0, "maj"), (5, "maj"), (7, "maj"), (5, "maj")),
    "vi-IV-I-V": ((9, "min"), (5, "maj"), (0, "maj"), (7, "maj")),
    "I-vi-IV-V": ((0, "maj"), (9, "min"), (5, "maj"), (7, "maj")),
    "I-IV-vi-V": ((0, "maj"), (5, "maj"), (9, "min"), (7, "maj")),
    "ii-V-I-vi": ((2, "min7"), (7, "dom"), (0, "maj7"), (9, "min7")),
    "I-iii-IV-V": ((0, "maj"), (4, "min"), (5, "maj"), (7, "dom")),
}
MINOR_PROGRESSIONS = {
    "i-VI-III-VII": ((0, "min"), (8, "maj"), (3, "maj"), (10, "maj")),
    "i-iv-v-i": ((0, "min"), (5, "min"), (7, "min"), (0, "min")),
    "i-VII-VI-VII": ((0, "min"), (10, "maj"), (8, "maj"), (10, "maj")),
    "i-iv-VII-III": ((0, "min"), (5, "min"), (10, "maj"), (3, "maj")),
    "i-VI-iv-V": ((0, "min"), (8, "maj"), (5, "min"), (7, "dom")),
}
CHORD_INTERVALS = {
    "maj": (0, 4, 7),
    "min": (0, 3, 7),
    "dom": (0, 4, 7, 10),
    "maj7": (0, 4, 7, 11),
    "min7": (0, 3, 7, 10),
}
SEVENTHS = {"maj": "maj7", "min": "min7"}


@dataclass(frozen=True)
class Style:
    tempo: tuple[int, int]
    swing: float  # delay of the off-beat eighth, in beats (1/6 = triplet feel)
    kits: tuple[int, ...]  # GM drum kit programs (bank 128)
    drums: dict  # GM drum key -> 16-step pattern ('X' accent, 'x' normal, 'g' ghost)
    bass: tuple[str, ...]
    roles: tuple[str, ...]  # allowed "other" roles
    sevenths: float  # probability of 7th chords


STYLES = {
    "rock": Style(
        (95, 145),
        0.0,
        (0, 8, 16),
        {36: "X.....x.X.x.....", 38: "....X.......X...", 42: "x.x.x.x.x.x.x.x."},
        ("eighths", "root_fifth", "octaves", "syncopated"),
        ("power", "comp", "strum", "pad"),
        0.1,
    ),
    "pop": Style(
        (85, 125),
        0.0,
        (0, 8, 16, 24),
        {36: "X.......X.x.....", 38: "....X.......X...", 42: "xgxgxgxgxgxgxgxg"},
        ("eighths", "root_fifth", "syncopated", "whole"),
        ("comp", "arp", "pad", "strum"),
        0.2,
    ),
    "ballad": Style(
        (60, 84),
        0.0,
        (0, 8, 40),
        {36: "X.......x.......", 37: "....x.......x...", 42: "x.x.x.x.x.x.x.x."},
        ("whole", "root_fifth"),
        ("pad", "arp", "comp"),
        0.4,
    ),
    "dance": Style(
        (118, 130),
        0.0,
        (24, 25, 0),
        {
            36: "X...X...X...X...",
            39: "....X.......X...",
            46: "..x...x...x...x.",
            42: "x...x...x...x...",
        },
        ("offbeat", "octaves", "syncopated"),
        ("arp", "pad", "comp"),
        0.2,
    ),
    "funk": Style(
        (90, 115),
        0.0,
        (0, 8, 16),
        {36: "X..x..X...X..x..", 38: "....X..g.g..X..g", 42: "xgxgxgxgxgxgxgxg"},
        ("funk", "syncopated", "octaves"),
        ("comp", "strum", "arp"),
        0.5,
    ),
    "jazz": Style(
        (110, 180),
        1 / 6,
        (32, 40, 0),
        {51: "X...x.x.X...x.x.", 44: "....x.......x...", 36: "g...g...g...g..."},
        ("walking",),
        ("comp", "pad", "arp"),
        0.9,
    ),
    "shuffle": Style(
        (80, 120),
        1 / 6,
        (0, 8, 32),
        {36: "X.....x.X.....x.", 38: "....X.......X...", 42: "x.x.x.x.x.x.x.x."},
        ("root_fifth", "eighths", "walking"),
        ("comp", "strum", "pad"),
        0.4,
    ),
}
ROLE_PROGRAMS = {
    "pad": (48, 49, 50, 88, 89, 91, 16, 19),
    "comp": (0, 1, 2, 4, 5, 7, 16, 17, 27, 61),
    "arp": (0, 8, 11, 12, 24, 25, 46, 80, 81),
    "strum": (24, 25, 26, 27),
    "power": (29, 30),
}
ROLE_REGISTER = {"pad": 55, "comp": 60, "arp": 64, "strum": 55, "power": 40}
BASS_PROGRAMS = {"jazz": (32,), "dance": (38, 39, 36), "funk": (36, 37, 33)}
VOCAL_PROGRAMS = (52, 53, 54, 85)
VOCAL_RANGES = {"male": (48, 67), "female": (57, 79)}
FORM = (("intro", 4), ("verse", 8), ("chorus", 8), ("verse", 8), ("chorus", 8), ("break", 4),
        ("chorus", 8), ("outro", 4))  # fmt: skip
SUNG_SECTIONS = ("verse", "chorus")
VELOCITY = {"X": 112, "x": 84, "g": 42}


@dataclass
class Song:
    """Tracks per stem (seconds from the excerpt start), the room and a JSON-able description."""

    stems: dict[str, list[Track]]
    room: RoomSettings
    meta: dict


class _Clock:
    """Beat position -> seconds, with swing on the off-beat eighths and per-note jitter."""

    def __init__(self, tempo: float, swing: float, jitter: float, start_beat: float, rng):
        self.spb, self.swing, self.jitter, self.start, self.rng = (
            60.0 / tempo,
            swing,
            jitter,
            start_beat,
            rng,
        )

    def __call__(self, beat: float, humanise: bool = True) -> float:
        whole, frac = math.floor(beat), beat - math.floor(beat)
        s = self.swing
        frac = frac * (0.5 + s) / 0.5 if frac < 0.5 else 0.5 + s + (frac - 0.5) * (0.5 - s) / 0.5
        t = (whole + frac - self.start) * self.spb
        return t + (self.rng.normal(0.0, self.jitter) if humanise else 0.0)


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def _vel(rng: np.random.Generator, base: float) -> int:
    return int(np.clip(round(base + rng.normal(0, 6)), 1, 127))


def _nearest_octave(pitch_class: int, center: int) -> int:
    return center + ((pitch_class - center + 6) % 12) - 6


def compose_song(rng: np.random.Generator, seconds: float) -> Song:
    """Draw one song and return the `seconds`-long excerpt as tracks for drums/bass/other/vocals."""
    style_name = _pick(rng, sorted(STYLES))
    style = STYLES[style_name]
    tempo = float(rng.integers(style.tempo[0], style.tempo[1] + 1))
    key = int(rng.integers(12))
    mode = "major" if rng.random() < 0.65 else "minor"
    pool = MAJOR_PROGRESSIONS if mode == "major" else MINOR_PROGRESSIONS
    verse_name, chorus_name = _pick(rng, sorted(pool)), _pick(rng, sorted(pool))
    chords_per_bar = 2 if rng.random() < 0.3 else 1
    use_sevenths = rng.random() < style.sevenths

    def chord_list(name):
        out = []
        for root, quality in pool[name]:
            out.append((root, SEVENTHS.get(quality, quality) if use_sevenths else quality))
        return out

    progressions = {"verse": chord_list(verse_name), "chorus": chord_list(chorus_name)}
    bar_seconds = 4 * 60.0 / tempo
    bars_needed = math.ceil(seconds / bar_seconds) + 1
    form = list(FORM)
    while sum(n for _, n in form) < bars_needed + 16:
        form += [("verse", 8), ("chorus", 8)]
    bars = []  # (section, section bar index, chords [(beat offset, root, quality)])
    for section, n in form:
        prog = progressions["chorus" if section in ("chorus", "break") else "verse"]
        for i in range(n):
            step = (i * chords_per_bar) % len(prog)
            chords = (
                [(0.0, *prog[step])]
                if chords_per_bar == 1
                else [(0.0, *prog[step]), (2.0, *prog[(step + 1) % len(prog)])]
            )
            bars.append((section, i, chords))
    starts = [  # an excerpt starts where a sung 2-bar phrase starts
        b
        for b, (sec, idx, _) in enumerate(bars)
        if sec in SUNG_SECTIONS and idx % 2 == 0 and b + bars_needed <= len(bars)
    ]
    start_bar = _pick(rng, starts)
    window = range(start_bar, start_bar + bars_needed)
    jitter = float(rng.uniform(0.004, 0.010))
    clock = _Clock(tempo, style.swing, jitter, 4.0 * start_bar, rng)

    drums, kit = _drums(rng, style, bars, window, clock)
    bass, bass_pattern = _bass(rng, style_name, style, key, bars, window, clock)
    other, other_meta = _other(rng, style, key, bars, window, clock)
    vocals, vocal_meta = _vocals(rng, key, mode, bars, window, clock)
    room = RoomSettings(
        room_size=float(rng.uniform(0.2, 0.8)),
        damping=float(rng.uniform(0.1, 0.6)),
        width=float(rng.uniform(0.5, 1.0)),
        level=float(rng.uniform(0.4, 0.9)),
        chorus_depth=float(rng.uniform(3.0, 10.0)),
        chorus_level=float(rng.uniform(1.0, 2.5)),
    )
    meta = {
        "style": style_name,
        "tempo": tempo,
        "key": KEY_NAMES[key],
        "mode": mode,
        "verse_progression": verse_name,
        "chorus_progression": chorus_name,
        "chords_per_bar": chords_per_bar,
        "sevenths": bool(use_sevenths),
        "start_bar": start_bar,
        "sections": sorted({bars[b][0] for b in window}),
        "drum_kit": kit,
        "bass": {"program": bass[0].program, "pattern": bass_pattern},
        "other": other_meta,
        "vocals": vocal_meta,
    }
    return Song({"drums": drums, "bass": bass, "other": other, "vocals": vocals}, room, meta)


def _chord_spans(bars, window):
    """(start beat, length in beats, root, quality, section, bar-in-section) for the window."""
    for b in window:
        section, idx, chords = bars[b]
        for j, (offset, root, quality) in enumerate(chords):
            end = chords[j + 1][0] if j + 1 < len(chords) else 4.0
            yield 4.0 * b + offset, end - offset, root, quality, section, idx


def _drums(rng, style, bars, window, clock):
    kit = int(_pick(rng, style.kits))
    track = Track(channel=9, program=kit, bank=128, pan=64, reverb_send=int(rng.integers(15, 50)))
    fill_prob = float(rng.uniform(0.3, 0.8))
    toms = (50, 48, 47, 45, 43, 41)
    for b in window:
        section, idx, _ = bars[b]
        sec_len = dict(FORM).get(section, 8)
        last_bar = idx == sec_len - 1 or (idx % 4 == 3 and rng.random() < 0.25)
        fill = last_bar and rng.random() < fill_prob
        sparse = section in ("intro", "break", "outro") and rng.random() < 0.5
        for drum_key, pattern in style.drums.items():
            if sparse and drum_key not in (36, 42, 44, 51):
                continue
            for step, ch in enumerate(pattern):
                if ch == "." or (fill and step >= 8):
                    continue
                if ch == "g" and rng.random() < 0.3:
                    continue
                track.notes.append(
                    (clock(4.0 * b + step / 4), 0.1, drum_key, _vel(rng, VELOCITY[ch]))
                )
            if style.swing == 0 and drum_key in (38, 39) and not fill:  # random ghost notes
                for step in range(16):
                    if pattern[step] == "." and rng.random() < 0.06:
                        track.notes.append(
                            (clock(4.0 * b + step / 4), 0.1, drum_key, _vel(rng, 38))
                        )
        if idx == 0 and section != "intro":
            track.notes.append((clock(4.0 * b), 0.5, 49, _vel(rng, 110)))
        if fill:
            first = int(rng.integers(len(toms) - 3))
            for step in range(8, 16):
                drum_key = (
                    38 if rng.random() < 0.3 else toms[min(first + (step - 8) // 2, len(toms) - 1)]
                )
                track.notes.append(
                    (clock(4.0 * b + step / 4), 0.1, drum_key, _vel(rng, 70 + 5 * (step - 8)))
                )
    return [track], kit


def _bass(rng, style_name, style, key, bars, window, clock):
    pattern = _pick(rng, style.bass)
    program = int(_pick(rng, BASS_PROGRAMS.get(style_name, tuple(range(32, 40)))))
    track = Track(channel=0, program=program, pan=64, reverb_send=int(rng.integers(0, 20)))
    spans = list(_chord_spans(bars, window))
    scale = MAJOR_SCALE
    for n, (start, length, root, quality, _, _) in enumerate(spans):
        base = 28 + (key + root - 4) % 12  # E1..D#2
        fifth, octave = base + 7, base + 12
        third = base + CHORD_INTERVALS[quality][1]
        notes = []  # (beat offset, beats, key, velocity)
        if pattern == "whole":
            notes = [(0.0, length * 0.95, base, 95)]
        elif pattern == "root_fifth":
            notes = [
                (b, 0.9, base if (b % 2 == 0) else fifth, 95) for b in np.arange(0, length, 1.0)
            ]
        elif pattern == "eighths":
            notes = [(b, 0.45, base, 90 if b % 1 == 0 else 75) for b in np.arange(0, length, 0.5)]
        elif pattern == "octaves":
            notes = [
                (b, 0.45, base if i % 2 == 0 else octave, 90)
                for i, b in enumerate(np.arange(0, length, 0.5))
            ]
        elif pattern == "offbeat":
            notes = [(b + 0.5, 0.4, base, 95) for b in np.arange(0, length, 1.0)]
        elif pattern == "syncopated":
            steps = "X..X..X...X..X.."
            notes = [(s / 4, 0.6, base if s < 8 else _pick(rng, (base, fifth, octave)), 95)
                     for s, ch in enumerate(steps) if ch == "X" and s / 4 < length]  # fmt: skip
        elif pattern == "funk":
            steps = "X..xX.x...x.X.xg"
            notes = [(s / 4, 0.2, octave if ch == "x" else base, VELOCITY[ch])
                     for s, ch in enumerate(steps) if ch != "." and s / 4 < length]  # fmt: skip
        elif pattern == "walking":
            nxt = spans[n + 1][2] if n + 1 < len(spans) else root
            target = 28 + (key + nxt - 4) % 12
            walk = [base]
            for b in range(1, int(length)):
                if b == int(length) - 1:
                    walk.append(target + (1 if rng.random() < 0.5 else -1))  # chromatic approach
                else:
                    walk.append(_pick(rng, (third, fifth, base + scale[int(rng.integers(1, 7))])))
            notes = [(float(b), 0.9, p, 90) for b, p in enumerate(walk)]
        for offset, beats, pitch, vel in notes:
            t0 = clock(start + offset)
            t1 = clock(start + offset + beats, humanise=False)
            track.notes.append((t0, max(0.05, t1 - t0), int(pitch), _vel(rng, vel)))
    return [track], pattern


def _voicing(pitch_classes, center):
    return sorted(_nearest_octave(pc, center) for pc in pitch_classes)


def _other(rng, style, key, bars, window, clock):
    n_tracks = int(rng.integers(1, 4))
    roles = [
        str(r) for r in rng.choice(style.roles, size=min(n_tracks, len(style.roles)), replace=False)
    ]
    tracks, meta = [], []
    spans = list(_chord_spans(bars, window))
    for ch, role in enumerate(roles):
        program = int(_pick(rng, ROLE_PROGRAMS[role]))
        track = Track(
            channel=ch + 1,
            program=program,
            pan=int(rng.integers(24, 105)),
            volume=int(rng.integers(80, 110)),
            reverb_send=int(rng.integers(30, 90)),
            chorus_send=int(rng.integers(0, 60)),
        )
        center = ROLE_REGISTER[role] + int(rng.integers(-3, 4))
        comp_rhythm = _pick(rng, ("..X...X.", "X..X..X.", ".X.X.X.X", "X.X.X.X."))  # eighths
        arp_rate = 0.5 if rng.random() < 0.6 else 0.25
        for start, length, root, quality, section, _ in spans:
            pcs = [(key + root + i) % 12 for i in CHORD_INTERVALS[quality]]
            voicing = _voicing(pcs, center)
            events = []  # (beat offset, beats, key, velocity)
            if role == "pad":
                events = [(0.0, length, p, 70) for p in voicing]
            elif role == "comp":
                for e, c in enumerate(comp_rhythm):
                    if c == "X" and e * 0.5 < length:
                        events += [(e * 0.5, 0.4, p, 80) for p in voicing]
            elif role == "arp":
                seq = voicing + [voicing[0] + 12]
                seq = seq + seq[-2:0:-1] if rng.random() < 0.5 else seq
                for i, b in enumerate(np.arange(0, length, arp_rate)):
                    events.append(
                        (float(b), arp_rate * 0.9, seq[i % len(seq)], 78 if i % 2 else 90)
                    )
            elif role == "strum":
                for i, b in enumerate(np.arange(0, length, 1.0 if rng.random() < 0.5 else 0.5)):
                    order = voicing if i % 2 == 0 else voicing[::-1]
                    gap = float(rng.uniform(0.02, 0.05))  # beats between strings
                    events += [
                        (float(b) + j * gap, 0.45, p, 85 - 4 * j) for j, p in enumerate(order)
                    ]
            elif role == "power":
                base = _nearest_octave((key + root) % 12, center)
                for b in np.arange(0, length, 0.5):
                    events += [(float(b), 0.45, p, 95) for p in (base, base + 7, base + 12)]
            if section in ("intro", "break", "outro") and role != "pad":
                events = events[::2]
            for offset, beats, pitch, vel in events:
                t0 = clock(start + offset)
                t1 = clock(start + offset + beats, humanise=False)
                track.notes.append((t0, max(0.05, t1 - t0), int(pitch), _vel(rng, vel)))
        tracks.append(track)
        meta.append({"program": program, "role": role})
    return tracks, meta


def _motif(rng) -> list[tuple[float, float]]:
    """Rhythm of one 2-bar phrase: (onset beat, beats), sung for 5-7.5 beats, then a rest."""
    sung = float(rng.integers(10, 16)) / 2
    out, beat = [], 0.0 if rng.random() < 0.7 else 0.5
    while beat < sung:
        dur = float(_pick(rng, (0.5, 0.5, 1.0, 1.0, 1.5, 2.0)))
        dur = min(dur, sung - beat)
        out.append((beat, dur))
        beat += dur
    return out


def _vocals(rng, key, mode, bars, window, clock):
    engine = "formant" if rng.random() < 0.5 else "gm"  # GM voice patch or the formant singer
    voice = "male" if rng.random() < 0.5 else "female"
    low, high = VOCAL_RANGES[voice]
    program = int(_pick(rng, VOCAL_PROGRAMS))
    track = Track(
        channel=0, program=program, pan=64, volume=110,
        reverb_send=int(rng.integers(40, 90)), chorus_send=int(rng.integers(0, 30)),
    )  # fmt: skip
    scale = MAJOR_SCALE if mode == "major" else MINOR_SCALE
    singable = [p for p in range(low, high + 1) if (p - key) % 12 in scale]
    motifs = {"verse": [_motif(rng), _motif(rng)], "chorus": [_motif(rng), _motif(rng)]}
    vib_rate, vib_depth = float(rng.uniform(4.8, 6.5)), float(rng.uniform(20, 50))  # Hz, cents
    spans = list(_chord_spans(bars, window))
    prev = singable[len(singable) // 2]
    for b in window:
        section, idx, _ = bars[b]
        if section not in SUNG_SECTIONS or idx % 2:
            continue
        center = low + (high - low) * (0.6 if section == "chorus" else 0.4)
        motif = motifs[section][(idx // 2) % 2]
        for onset, beats in motif:
            beat = 4.0 * b + onset
            chord = (
                next(s for s in spans if s[0] <= beat < s[0] + s[1])
                if beat < 4.0 * window.stop
                else spans[-1]
            )
            chord_pcs = {(key + chord[2] + i) % 12 for i in CHORD_INTERVALS[chord[3]]}
            if onset % 2 == 0:  # strong beat: a chord tone near the previous note
                options = sorted(
                    (p for p in singable if p % 12 in chord_pcs), key=lambda p: abs(p - prev)
                )
                pitch = options[int(rng.integers(min(2, len(options))))]
            else:  # weak beat: a step, pulled toward the section's register
                i = singable.index(prev) if prev in singable else len(singable) // 2
                step = int(_pick(rng, (-2, -1, -1, 1, 1, 2)))
                step += 1 if prev < center - 4 else -1 if prev > center + 4 else 0
                pitch = singable[int(np.clip(i + step, 0, len(singable) - 1))]
            prev = pitch
            t0 = clock(beat)
            t1 = clock(beat + beats, humanise=False) - 0.03
            dur = max(0.08, t1 - t0)
            track.notes.append((t0, dur, pitch, _vel(rng, 96)))
            _expression(rng, track, t0, dur, vib_rate, vib_depth)
    return [track], {
        "engine": engine,
        "program": program,
        "voice": voice,
        "vibrato_hz": vib_rate,
        "vibrato_cents": vib_depth,
    }


def _bend_value(cents: float) -> int:
    return int(
        np.clip(round(8192 + cents / 200.0 * 8191), 0, 16383)
    )  # default bend range: 2 semitones


def _expression(rng, track: Track, t0: float, dur: float, rate: float, depth: float) -> None:
    """Scoop into the note, delayed vibrato via pitch bend, and a CC11 swell."""
    scoop = -float(rng.uniform(40, 120)) if rng.random() < 0.5 else 0.0
    scoop_len = float(rng.uniform(0.04, 0.09))
    delay = float(rng.uniform(0.12, 0.3))
    step = 0.015
    for t in np.arange(0.0, dur, step):
        cents = scoop * max(0.0, 1.0 - t / scoop_len)
        if t > delay:
            ramp = min(1.0, (t - delay) / 0.2)
            cents += ramp * depth * math.sin(2 * math.pi * rate * (t - delay))
        track.bends.append((t0 + t - (0.001 if t == 0 else 0.0), _bend_value(cents)))
    swell = float(rng.uniform(90, 115))
    for t in np.arange(0.0, dur, 0.05):
        track.ccs.append(
            (t0 + t, 11, int(min(127, swell + (127 - swell) * min(1.0, t / max(dur * 0.4, 0.05)))))
        )

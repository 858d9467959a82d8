"""Render MIDI-like note lists to float stereo audio with libfluidsynth (ctypes).

Why ctypes and not pyfluidsynth's `Synth`: its `get_samples` gives int16 only and its `set_chorus`
defaults zero the chorus. We borrow only its library lookup and talk to libfluidsynth directly.
Every stem is rendered on a FRESH synth with the already loaded soundfonts moved across: FluidSynth's
`system_reset` keeps reverb/chorus buffers and LFO phase, so a reused synth leaks the previous
stem's tail (-35 dB) and makes the output depend on render order.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from jaxsep.errors import JaxsepError

SAMPLE_RATE = 44100
SOUNDFONT_DIRS = (Path("/usr/share/sounds/sf2"), Path("/usr/share/soundfonts"))
DEFAULT_SOUNDFONT = "TimGM6mb.sf2"
INSTALL_HINT = (
    "install libfluidsynth3 and a GM soundfont (apt-get install libfluidsynth3 timgm6mb-soundfont)"
)

_FLUID_LOG_LEVELS_TO_SILENCE = (2, 3, 4)  # FLUID_WARN, FLUID_INFO, FLUID_DBG


@dataclass
class Track:
    """One MIDI channel of a stem: instrument, mix settings and timed events (seconds)."""

    channel: int
    program: int
    bank: int = 0
    pan: int = 64
    volume: int = 100
    reverb_send: int = 40
    chorus_send: int = 0
    notes: list[tuple[float, float, int, int]] = field(default_factory=list)  # start, dur, key, vel
    bends: list[tuple[float, int]] = field(default_factory=list)  # time, value 0..16383
    ccs: list[tuple[float, int, int]] = field(default_factory=list)  # time, controller, value


@dataclass
class RoomSettings:
    """Per-song reverb and chorus, set on each fresh synth before rendering."""

    room_size: float = 0.4
    damping: float = 0.3
    width: float = 0.8
    level: float = 0.6
    chorus_depth: float = 6.0
    chorus_level: float = 1.5


def _load_library() -> ctypes.CDLL:
    try:
        import fluidsynth  # pyfluidsynth: only for its library lookup
    except (ImportError, OSError) as e:
        raise JaxsepError(f"libfluidsynth not found ({e}); {INSTALL_HINT}") from None
    lib = ctypes.CDLL(fluidsynth.lib)  # own function objects: we set our own prototypes
    vp, ci, cd, cs = ctypes.c_void_p, ctypes.c_int, ctypes.c_double, ctypes.c_char_p
    protos = {
        "new_fluid_settings": (vp, []),
        "delete_fluid_settings": (None, [vp]),
        "fluid_settings_setnum": (ci, [vp, cs, cd]),
        "fluid_settings_setint": (ci, [vp, cs, ci]),
        "new_fluid_synth": (vp, [vp]),
        "delete_fluid_synth": (None, [vp]),
        "fluid_synth_sfload": (ci, [vp, cs, ci]),
        "fluid_synth_get_sfont_by_id": (vp, [vp, ci]),
        "fluid_synth_remove_sfont": (ci, [vp, vp]),
        "fluid_synth_add_sfont": (ci, [vp, vp]),
        "fluid_synth_program_select": (ci, [vp, ci, ci, ci, ci]),
        "fluid_synth_noteon": (ci, [vp, ci, ci, ci]),
        "fluid_synth_noteoff": (ci, [vp, ci, ci]),
        "fluid_synth_cc": (ci, [vp, ci, ci, ci]),
        "fluid_synth_pitch_bend": (ci, [vp, ci, ci]),
        "fluid_synth_write_float": (ci, [vp, ci, vp, ci, ci, vp, ci, ci]),
        "fluid_set_log_function": (vp, [ci, vp, vp]),
    }
    for name, (restype, argtypes) in protos.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, argtypes
    for level in _FLUID_LOG_LEVELS_TO_SILENCE:  # fresh synths warn "No preset found" before sfonts
        lib.fluid_set_log_function(level, None, None)
    return lib


def find_soundfont(name: str | Path) -> Path:
    """Resolve a soundfont name (e.g. `FluidR3_GM.sf2`) or path; one-line error if absent."""
    path = Path(name)
    if path.is_file():
        return path
    for folder in SOUNDFONT_DIRS:
        if (folder / path.name).is_file():
            return folder / path.name
    dirs = ", ".join(str(d) for d in SOUNDFONT_DIRS)
    raise JaxsepError(f"soundfont {name} not found in {dirs}; {INSTALL_HINT}")


def default_soundfonts() -> list[Path]:
    """TimGM6mb (loads in ~0.1 s) when present, else any GM .sf2 found."""
    for folder in SOUNDFONT_DIRS:
        if (folder / DEFAULT_SOUNDFONT).is_file():
            return [folder / DEFAULT_SOUNDFONT]
    for folder in SOUNDFONT_DIRS:
        found = sorted(p for p in folder.glob("*.sf2") if p.is_file()) if folder.is_dir() else []
        if found:
            return [found[0]]
    raise JaxsepError(f"no GM soundfont (.sf2) in {SOUNDFONT_DIRS[0]}; {INSTALL_HINT}")


class FluidRenderer:
    """Holds loaded soundfonts for one process and renders each stem on a fresh synth."""

    def __init__(self, soundfonts: Sequence[Path]):
        self._lib = _load_library()
        self._settings = self._new_settings(RoomSettings())
        self._holder = self._lib.new_fluid_synth(self._settings)
        self._sfonts: dict[str, int] = {}  # name -> C pointer, owned by the holder synth
        for path in soundfonts:
            sfid = self._lib.fluid_synth_sfload(self._holder, str(path).encode(), 0)
            if sfid < 0:
                raise JaxsepError(f"{path}: not a readable soundfont")
            self._sfonts[Path(path).name] = self._lib.fluid_synth_get_sfont_by_id(
                self._holder, sfid
            )

    @property
    def soundfont_names(self) -> list[str]:
        return list(self._sfonts)

    def _new_settings(self, room: RoomSettings) -> int:
        lib, s = self._lib, self._lib.new_fluid_settings()
        for key, value in (
            ("synth.sample-rate", float(SAMPLE_RATE)),
            ("synth.gain", 0.5),
            ("synth.reverb.room-size", room.room_size),
            ("synth.reverb.damp", room.damping),
            ("synth.reverb.width", room.width),
            ("synth.reverb.level", room.level),
            ("synth.chorus.depth", room.chorus_depth),
            ("synth.chorus.level", room.chorus_level),
        ):
            lib.fluid_settings_setnum(s, key.encode(), value)
        for key, value in (("synth.polyphony", 256), ("synth.cpu-cores", 1)):
            lib.fluid_settings_setint(s, key.encode(), value)
        return s

    def render(
        self, tracks: Sequence[Track], seconds: float, soundfont: str, room: RoomSettings
    ) -> np.ndarray:
        """Render `tracks` for exactly `seconds`; returns float32 `[samples, 2]`."""
        lib = self._lib
        n_total = int(round(seconds * SAMPLE_RATE))
        settings = self._new_settings(room)
        synth = lib.new_fluid_synth(settings)
        sfont = self._sfonts[soundfont]
        lib.fluid_synth_remove_sfont(self._holder, sfont)
        sfid = lib.fluid_synth_add_sfont(synth, sfont)
        try:
            for t in tracks:
                if lib.fluid_synth_program_select(synth, t.channel, sfid, t.bank, t.program) != 0:
                    lib.fluid_synth_program_select(synth, t.channel, sfid, t.bank, 0)
                for cc, value in (
                    (7, t.volume),
                    (10, t.pan),
                    (91, t.reverb_send),
                    (93, t.chorus_send),
                ):
                    lib.fluid_synth_cc(synth, t.channel, cc, int(value))
            out = np.zeros((n_total, 2), np.float32)
            position = 0
            for sample, _, call, args in _schedule(tracks, n_total):
                if sample > position:
                    _write(lib, synth, out, position, sample)
                    position = sample
                call(lib, synth, *args)
            if position < n_total:
                _write(lib, synth, out, position, n_total)
        finally:
            lib.fluid_synth_remove_sfont(synth, sfont)
            lib.fluid_synth_add_sfont(self._holder, sfont)
            lib.delete_fluid_synth(synth)
            lib.delete_fluid_settings(settings)
        return out


def _write(lib: ctypes.CDLL, synth: int, out: np.ndarray, start: int, stop: int) -> None:
    view = out[start:stop]  # C-contiguous rows: interleaved L/R
    ptr = view.ctypes.data
    lib.fluid_synth_write_float(synth, stop - start, ptr, 0, 2, ptr, 1, 2)


def _noteon(lib, synth, chan, key, vel):
    lib.fluid_synth_noteon(synth, chan, key, vel)


def _noteoff(lib, synth, chan, key):
    lib.fluid_synth_noteoff(synth, chan, key)


def _bend(lib, synth, chan, value):
    lib.fluid_synth_pitch_bend(synth, chan, value)


def _cc(lib, synth, chan, ctrl, value):
    lib.fluid_synth_cc(synth, chan, ctrl, value)


def _schedule(tracks: Sequence[Track], n_total: int) -> list:
    """All events as (sample, priority, call, args), sorted; note-offs before note-ons."""
    events = []
    for t in tracks:
        ch = t.channel
        for start, dur, key, vel in t.notes:
            on = max(0, int(round(start * SAMPLE_RATE)))
            off = max(on + 1, int(round((start + dur) * SAMPLE_RATE)))
            if on < n_total:
                events.append((on, 2, _noteon, (ch, int(key), int(np.clip(vel, 1, 127)))))
                events.append((off, 0, _noteoff, (ch, int(key))))
        for time, value in t.bends:
            events.append((max(0, int(round(time * SAMPLE_RATE))), 1, _bend, (ch, int(value))))
        for time, ctrl, value in t.ccs:
            sample = max(0, int(round(time * SAMPLE_RATE)))
            events.append((sample, 1, _cc, (ch, int(ctrl), int(value))))
    events = [e for e in events if e[0] < n_total]
    events.sort(key=lambda e: (e[0], e[1], e[3]))
    return events

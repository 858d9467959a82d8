"""Offline synthetic multi-stem corpus in MUSDB18-HQ layout (`jaxsep synth`).

Why: real multitrack data cannot be downloaded on the project machines, yet every recipe needs
stems. `pop` draws procedural songs (drums/bass/other/vocals), `chorale` plays real Bach chorales
(soprano/alto/tenor/bass); both render through a GM soundfont with libfluidsynth.

Guarantees:
- Layout `OUT/{train,test}/<song>/{mixture,<stems>}.wav` (44.1 kHz stereo PCM_16) + `meta.json` per
  song, `OUT/synth.yaml` (pop) or `OUT/chorales.yaml` (chorale) for `musdb.DB(setup_file=...)`,
  and `OUT/corpus.json` (the parameters; it marks OUT as a jaxsep corpus that may be replaced).
- The mixture file is the integer sum of the int16 stem files, so mixture == sum(stems) exactly as
  read back; one common scale keeps the mixture and every stem at or below 0.95 full scale.
- Song i depends only on (seed, i): same seed -> byte-identical files for any worker count.
- Atomic: everything is rendered into `OUT.partial-XXXX` next to OUT and renamed at the end; on
  error the partial folder is removed and OUT is left as it was.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf

from jaxsep.errors import JaxsepError

DOMAINS = {
    "pop": {"stems": ("drums", "bass", "other", "vocals"), "yaml": "synth.yaml"},
    "chorale": {"stems": ("soprano", "alto", "tenor", "bass"), "yaml": "chorales.yaml"},
}
TARGET_DBFS = {"vocals": -24.0, "drums": -26.0, "bass": -26.0, "other": -26.5}
CHORALE_DBFS = -26.0
GAIN_SPREAD_DB, GAIN_LIMIT_DB = 2.5, 5.0
PEAK_LIMIT = 0.95
MIN_ACTIVE_FRACTION = 0.4  # of 50 ms frames above -50 dB relative to the loudest frame
MAX_ATTEMPTS = 8  # re-draws of a song whose stem came out (nearly) silent
MARKER = "corpus.json"
FRAME = 2205

_RENDERER = None  # per-process FluidRenderer (soundfonts load once per worker)


def synthesize_corpus(
    out: Path,
    songs: int,
    seconds: float,
    domain: str = "pop",
    seed: int = 0,
    workers: int = 1,
    test_fraction: float = 0.25,
    soundfonts: Sequence[str | Path] | None = None,
) -> dict:
    """Write a MUSDB18-HQ-layout corpus to `out`; returns {"songs", "audio_seconds", "wall_seconds", ...}.

    `seconds` is the length of each pop song, or the crop of each chorale (0 = whole chorale).
    `soundfonts` names GM .sf2 files (under /usr/share/sounds/sf2 or paths); one is drawn per stem.
    Default: TimGM6mb.sf2 (loads in 0.1 s; FluidR3_GM.sf2 is richer but loads in ~1 s per worker).
    """
    wall0 = time.perf_counter()
    out = Path(out)
    _check_arguments(out, songs, seconds, domain, seed, workers, test_fraction)
    from jaxsep.data.synth_render import _load_library, default_soundfonts, find_soundfont

    _load_library()  # one-line error now if libfluidsynth is missing, before anything is written
    fonts = [find_soundfont(s) for s in soundfonts] if soundfonts else default_soundfonts()
    font_names = [f.name for f in fonts]
    if len(set(font_names)) != len(font_names):
        raise JaxsepError(f"soundfonts {font_names}: the same file name is given twice")

    out.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f"{out.name}.partial-", dir=out.parent))
    try:
        context = multiprocessing.get_context("spawn")
        pool = (
            context.Pool(workers, _init_worker, ([str(f) for f in fonts],)) if workers > 1 else None
        )
        if pool is None:
            _init_worker([str(f) for f in fonts])
        try:
            jobs = _jobs(domain, songs, seconds, seed, test_fraction, font_names, pool)
            for job in jobs:
                job["root"] = str(partial)
            results = list(pool.imap(_render_job, jobs) if pool else map(_render_job, jobs))
        finally:
            if pool is not None:
                pool.close()
                pool.join()
        _write_index(partial, domain, jobs, seconds, seed, test_fraction, font_names)
        _replace(partial, out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return {
        "songs": len(results),
        "audio_seconds": float(sum(r["seconds"] for r in results)),
        "wall_seconds": time.perf_counter() - wall0,
        "cpu_seconds": float(sum(r["cpu_seconds"] for r in results)),
        "train": sum(j["subset"] == "train" for j in jobs),
        "test": sum(j["subset"] == "test" for j in jobs),
        "domain": domain,
        "out": str(out),
    }


def _check_arguments(out, songs, seconds, domain, seed, workers, test_fraction) -> None:
    if domain not in DOMAINS:
        raise JaxsepError(f"{out}: domain must be one of {sorted(DOMAINS)}, got {domain!r}")
    if not isinstance(songs, int) or songs < 1:
        raise JaxsepError(f"{out}: --songs must be a positive integer, got {songs}")
    if not (isinstance(seconds, (int, float)) and math.isfinite(seconds)):
        raise JaxsepError(f"{out}: --seconds must be a finite number, got {seconds}")
    if domain == "pop" and not 0 < seconds <= 3600:
        raise JaxsepError(f"{out}: --seconds must be in (0, 3600] for pop songs, got {seconds}")
    if domain == "chorale" and seconds < 0:
        raise JaxsepError(f"{out}: --seconds must be >= 0 for chorales (0 = whole), got {seconds}")
    if not isinstance(seed, int) or seed < 0:
        raise JaxsepError(f"{out}: --seed must be a non-negative integer, got {seed}")
    if not isinstance(workers, int) or workers < 1:
        raise JaxsepError(f"{out}: --workers must be a positive integer, got {workers}")
    if not 0.0 <= test_fraction <= 1.0:
        raise JaxsepError(f"{out}: --test-fraction must be in [0, 1], got {test_fraction}")
    if out.exists() and not out.is_dir():
        raise JaxsepError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise JaxsepError(
            f"{out}: folder is not empty and not a jaxsep synth corpus; refusing to overwrite"
        )


def _split(n: int, test_fraction: float) -> list[str]:
    """Last round(n * fraction) songs go to test; both subsets non-empty when n >= 2 and 0 < f < 1."""
    n_test = int(round(n * test_fraction))
    if n >= 2 and 0 < test_fraction < 1:
        n_test = min(max(n_test, 1), n - 1)
    return ["train"] * (n - n_test) + ["test"] * n_test


def _jobs(domain, songs, seconds, seed, test_fraction, font_names, pool) -> list[dict]:
    subsets = _split(songs, test_fraction)
    common = {"domain": domain, "seconds": float(seconds), "seed": seed, "soundfonts": font_names}
    if domain == "pop":
        return [
            {**common, "index": i, "name": f"synth_{i:06d}", "subset": subsets[i]}
            for i in range(songs)
        ]
    chorales = _pick_chorales(songs, seed, pool)
    return [
        {**common, "index": i, "name": c.name, "subset": subsets[i], "chorale": c}
        for i, c in enumerate(chorales)
    ]


def _pick_chorales(count: int, seed: int, pool) -> list:
    """The first `count` 4-part chorales of a seed-shuffled candidate list (parsed in parallel)."""
    from jaxsep.data.synth_chorale import chorale_candidates, load_chorale

    candidates = chorale_candidates()
    if not candidates:
        raise JaxsepError("music21 corpus has no Bach chorales; install music21 with its corpus")
    order = np.random.default_rng([seed, 1]).permutation(len(candidates))
    ordered = [candidates[i] for i in order]
    chosen, position = [], 0
    while len(chosen) < count and position < len(ordered):
        chunk = ordered[position : position + max(count - len(chosen), 4)]
        position += len(chunk)
        parsed = pool.map(load_chorale, chunk) if pool else [load_chorale(p) for p in chunk]
        chosen += [c for c in parsed if c is not None][: count - len(chosen)]
    if len(chosen) < count:
        raise JaxsepError(
            f"--songs {count}: only {len(chosen)} 4-part Bach chorales in the music21 corpus"
        )
    return chosen


def _init_worker(font_paths: list[str]) -> None:
    global _RENDERER
    from jaxsep.data.synth_render import FluidRenderer

    if _RENDERER is None or _RENDERER.soundfont_names != [Path(p).name for p in font_paths]:
        _RENDERER = FluidRenderer([Path(p) for p in font_paths])


def _render_job(job: dict) -> dict:
    """Compose (or arrange), render, mix and write one song; re-draws if a stem is near silent."""
    cpu0 = time.process_time()
    problem = ""
    for attempt in range(MAX_ATTEMPTS):
        rng = np.random.default_rng([job["seed"], job["index"], attempt])
        stems, meta, seconds = _render_stems(job, rng)
        levels = _levels(stems)
        problem = ", ".join(f"{k} active {v['active_fraction']:.2f}" for k, v in levels.items()
                            if v["active_fraction"] < MIN_ACTIVE_FRACTION)  # fmt: skip
        if not problem:
            break
    else:
        raise JaxsepError(
            f"{job['name']}: a stem stayed silent after {MAX_ATTEMPTS} draws ({problem})"
        )
    ints, gains, scale = _mix_to_int16(stems, levels, rng, job["domain"])
    folder = Path(job["root"]) / job["subset"] / job["name"]
    folder.mkdir(parents=True)
    for name, data in ints.items():
        sf.write(folder / f"{name}.wav", data, 44100, subtype="PCM_16")
    meta.update(
        name=job["name"], index=job["index"], seed=job["seed"], attempt=attempt,
        seconds=seconds, gains_db=gains, scale=scale,
        levels={k: {kk: round(vv, 4) for kk, vv in v.items()} for k, v in _levels(
            {k: v.astype(np.float32) / 32768.0 for k, v in ints.items()}).items()},
    )  # fmt: skip
    (folder / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return {"seconds": seconds, "cpu_seconds": time.process_time() - cpu0}


def _render_stems(job: dict, rng: np.random.Generator) -> tuple[dict[str, np.ndarray], dict, float]:
    fonts = job["soundfonts"]
    if job["domain"] == "pop":
        from jaxsep.data.synth_compose import compose_song

        song = compose_song(rng, job["seconds"])
        tracks, room, seconds, meta = song.stems, song.room, job["seconds"], song.meta
    else:
        from jaxsep.data.synth_chorale import arrange_chorale

        tracks, room, seconds, meta = arrange_chorale(job["chorale"], rng, job["seconds"])
    audio, used = {}, {}
    for name in DOMAINS[job["domain"]]["stems"]:
        font = fonts[int(rng.integers(len(fonts)))]
        if name == "vocals" and meta["vocals"]["engine"] == "formant":
            from jaxsep.data.synth_voice import sing

            audio[name] = sing(tracks[name][0].notes, seconds, meta["vocals"]["voice"], rng)
            font = "formant singer"
        else:
            audio[name] = _RENDERER.render(tracks[name], seconds, font, room)
        used[name] = font
    meta["soundfonts"] = used
    meta["room"] = {k: round(v, 4) for k, v in vars(room).items()}
    return audio, meta, seconds


def _levels(stems: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Active fraction, active RMS and peak per stem (50 ms frames, mono sum)."""
    out = {}
    for name, x in stems.items():
        mono = x.astype(np.float64).mean(axis=1)
        n = max(1, len(mono) // FRAME)
        frames = np.sqrt(np.mean(mono[: n * FRAME].reshape(n, -1) ** 2, axis=1) + 1e-20)
        loud = frames.max()
        active = (frames > loud * 10 ** (-50 / 20)) & (frames > 1e-5)
        rms = float(np.sqrt(np.mean(frames[active] ** 2))) if active.any() else 0.0
        out[name] = {
            "active_fraction": float(active.mean()),
            "active_rms": rms,
            "peak": float(np.abs(x).max()),
        }
    return out


def _mix_to_int16(stems, levels, rng, domain) -> tuple[dict[str, np.ndarray], dict, float]:
    """Level each stem, scale all so peaks stay <= 0.95, quantise; mixture = int sum of stems."""
    gains, scaled = {}, {}
    for name, x in stems.items():
        target = TARGET_DBFS.get(name, CHORALE_DBFS) if domain == "pop" else CHORALE_DBFS
        gain_db = target + float(
            np.clip(rng.normal(0, GAIN_SPREAD_DB), -GAIN_LIMIT_DB, GAIN_LIMIT_DB)
        )
        gains[name] = round(gain_db, 3)
        scaled[name] = x.astype(np.float64) * (10 ** (gain_db / 20) / levels[name]["active_rms"])
    peak = max([np.abs(sum(scaled.values())).max()] + [np.abs(x).max() for x in scaled.values()])
    scale = min(1.0, PEAK_LIMIT / peak)
    ints = {k: np.round(v * scale * 32767).astype(np.int16) for k, v in scaled.items()}
    total = sum(v.astype(np.int32) for v in ints.values())
    assert np.abs(total).max() <= 32767, "mixture would clip"  # 0.95 FS + 4 LSB rounding at most
    return {"mixture": total.astype(np.int16), **ints}, gains, round(scale, 6)


def _musdb_setup(stems: Sequence[str], validation: list[str]) -> dict:
    targets = {s: {s: 1} for s in stems}
    if "vocals" in stems:
        targets["accompaniment"] = {s: 1 for s in stems if s != "vocals"}
    targets["linear_mixture"] = {s: 1 for s in stems}
    return {
        "sample_rate": 44100.0,
        "sources": {s: f"{s}.wav" for s in stems},
        "mixture": "mixture.wav",
        "stem_ids": {"mixture": 0, **{s: i + 1 for i, s in enumerate(stems)}},
        "targets": targets,
        "validation_tracks": validation,
    }


def _write_index(root: Path, domain, jobs, seconds, seed, test_fraction, font_names) -> None:
    """The musdb setup YAML (validation = last ~10% of train) and corpus.json."""
    import yaml

    for subset in ("train", "test"):
        (root / subset).mkdir(exist_ok=True)
    train = [j["name"] for j in jobs if j["subset"] == "train"]
    n_valid = int(math.ceil(0.1 * len(train))) if len(train) >= 2 else 0
    setup = _musdb_setup(DOMAINS[domain]["stems"], train[len(train) - n_valid :])
    (root / DOMAINS[domain]["yaml"]).write_text(yaml.safe_dump(setup, sort_keys=False))
    index = {
        "domain": domain,
        "seconds": seconds,
        "seed": seed,
        "test_fraction": test_fraction,
        "soundfonts": font_names,
        "stems": list(DOMAINS[domain]["stems"]),
        "setup_file": DOMAINS[domain]["yaml"],
        "train": train,
        "valid": setup["validation_tracks"],
        "test": [j["name"] for j in jobs if j["subset"] == "test"],
    }
    (root / MARKER).write_text(json.dumps(index, indent=2) + "\n")


def _replace(partial: Path, out: Path) -> None:
    """Move the finished corpus into place; an old jaxsep corpus at `out` is removed after."""
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f"{out.name}.old-", dir=out.parent))
        out.rename(old / "corpus")
        partial.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        partial.rename(out)

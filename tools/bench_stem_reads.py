"""Time reading training windows from a MUSDB18 ``.stem.mp4``: stempeg (musdb's reader) against
`jaxsep.audio.streams` (probe once, input-side seek with pre-roll, one ffmpeg call for all the
stems of a window), and against the same windows read from WAV (MUSDB18-HQ) with soundfile.

Writes one synthetic stereo track of `--minutes` (mixture + 4 stems, AAC in MP4, as MUSDB18
ships) and reads `--window` seconds of one stem, and of all four stems (an excerpt), at offsets
spread over the track, interleaving the readers. Prints one JSON record (median seconds per
window by reader and by offset, the ratios stempeg / jaxsep, the largest difference between the
two readers' windows); `-o FILE` appends it.

    .venv/bin/python tools/bench_stem_reads.py [--minutes 4] [--window 6] [--repeats 5] \
        [-o benchmarks/results/cpu/stem_reads.jsonl]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.signal
import soundfile as sf

from jaxsep.audio.streams import probe_streams, read_stream_window, read_streams_window
from jaxsep.bench import harness

RATE = 44100


def write_stem_mp4(path: Path, streams: np.ndarray, rate: int = RATE) -> None:
    """``streams`` [N, T, C] as one MUSDB18-style ``.stem.mp4`` (AAC 256 kb/s, one audio stream
    each), via ffmpeg as stempeg writes it, but with noise substitution off: with it the decoder
    fills some bands with noise from a generator that runs from where decoding started, so two
    decodes of a window agree only if they started at the same place (up to 0.06 apart here)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    command = ["ffmpeg", "-nostdin", "-v", "error", "-y"]
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        for k, stream in enumerate(np.asarray(streams, np.float32)):
            sf.write(Path(tmp) / f"{k}.wav", stream, rate, subtype="FLOAT")
            command += ["-i", str(Path(tmp) / f"{k}.wav")]
        command += [arg for k in range(len(streams)) for arg in ("-map", f"{k}:a")]
        command += ["-c:a", "aac", "-aac_pns", "0", "-b:a", "256k", str(path)]
        subprocess.run(command, check=True, capture_output=True)


def write_track(folder: Path, minutes: float) -> tuple[Path, Path]:
    """A coloured-noise-plus-tones track as ``.stem.mp4`` (the mixture, then 4 stems) and its
    first stem as a WAV."""
    rng = np.random.default_rng(0)
    frames = int(minutes * 60 * RATE)
    t = np.arange(frames) / RATE
    stems = []
    for k in range(4):
        noise = scipy.signal.lfilter([1.0], [1.0, -0.9], rng.standard_normal((frames, 2)), axis=0)
        tone = np.sin(2 * np.pi * (110 * (k + 1)) * t)[:, None]
        stems.append(0.02 * noise + 0.1 * tone)
    stems = np.stack(stems).astype(np.float32)
    mp4, wav = folder / "track.stem.mp4", folder / "drums.wav"
    write_stem_mp4(mp4, np.concatenate([stems.sum(0, keepdims=True), stems]))
    sf.write(wav, stems[0], RATE, subtype="FLOAT")
    return mp4, wav


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=4.0)
    parser.add_argument("--window", type=float, default=6.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("-o", "--out", type=Path, help="append the JSON record to this file")
    args = parser.parse_args()
    import stempeg

    load_start = harness.load_average()
    with tempfile.TemporaryDirectory() as tmp:
        mp4, wav = write_track(Path(tmp), args.minutes)
        frames = int(args.window * RATE)
        length = int(args.minutes * 60 * RATE)
        offsets = [int(f * (length - frames)) for f in (0.05, 0.5, 0.95)]
        refs = probe_streams(mp4)
        info = stempeg.Info(str(mp4))  # as musdb passes it: probed once per track

        def read_stempeg(start: int, stems=1) -> np.ndarray:
            audio, _ = stempeg.read_stems(
                str(mp4), start=start / RATE, duration=args.window, stem_id=stems, info=info,
                dtype=np.float32,
            )  # fmt: skip
            return audio

        def read_wav(start: int) -> np.ndarray:
            return sf.read(wav, start=start, frames=frames, dtype="float32", always_2d=True)[0]

        readers = {  # one stem, then a training excerpt's four stems
            "stempeg": read_stempeg,
            "jaxsep": lambda start: read_stream_window(refs[1], start, frames),
            "wav_soundfile": read_wav,
            "stempeg_4_stems": lambda start: read_stempeg(start, [1, 2, 3, 4]),
            "jaxsep_4_stems": lambda start: read_streams_window(refs[1:], start, frames),
        }
        times = {name: {o: [] for o in offsets} for name in readers}
        max_diff = 0.0
        for _ in range(args.repeats):
            for offset in offsets:
                windows = {}
                for name, read in readers.items():
                    begin = time.perf_counter()
                    windows[name] = read(offset)
                    times[name][offset].append(time.perf_counter() - begin)
                for ours, theirs in (("jaxsep", "stempeg"), ("jaxsep_4_stems", "stempeg_4_stems")):
                    n = min(windows[ours].shape[-2], windows[theirs].shape[-2])
                    diff = np.abs(windows[ours][..., :n, :] - windows[theirs][..., :n, :]).max()
                    max_diff = max(max_diff, float(diff))
    median = {
        name: {f"{o / RATE:.1f}s": round(statistics.median(ts), 4) for o, ts in by.items()}
        for name, by in times.items()
    }
    overall = {
        name: statistics.median(t for ts in by.values() for t in ts) for name, by in times.items()
    }
    record = {
        "bench": "stem_reads",
        "signals": f"{args.minutes:g} min stereo .stem.mp4 (AAC 256 kb/s), {args.window:g} s "
        f"windows of one stem (stempeg {stempeg.__version__})",
        "device": f"{harness.cpu_model_name()} ({os.cpu_count()} cores)",
        "median_s_by_offset": median,
        "median_s": {name: round(s, 4) for name, s in overall.items()},
        "speedup": round(overall["stempeg"] / overall["jaxsep"], 2),
        "speedup_4_stems": round(overall["stempeg_4_stems"] / overall["jaxsep_4_stems"], 2),
        "wav_speedup_over_jaxsep": round(overall["jaxsep"] / overall["wav_soundfile"], 1),
        "max_abs_diff": max_diff,
        "repeats": args.repeats,
        "load_avg_start": load_start,
    }
    harness.finish_tool_record(record, args.out)


if __name__ == "__main__":
    main()

"""Time `jaxsep.evaluate.bsseval.bss_eval_v4` over a set of tracks of different lengths, as
`jaxsep evaluate` scores a test set: with its length ladder (signals zero-padded so that tracks
of similar length share compiled programs) against exact lengths (every track compiles the
statistics and frame programs anew).

`--tracks` songs (4 stereo sources, 44.1 kHz, window = hop = 1 s) with lengths spread evenly
over `--seconds MIN MAX`, scored in a fresh process per way (the length-independent filter
solve compiled first, on a song outside the set, and not timed), the ways alternating over
`--repeats` rounds. Prints one JSON record (median seconds for the whole set per way, the
programs each compiled, ladder / exact); `-o FILE` appends it.

    .venv/bin/python tools/bench_bsseval_tracks.py [--tracks 12] [--seconds 24 36] \
        [--repeats 3] [-o benchmarks/results/cpu/bsseval_tracks.jsonl]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_bsseval import SAMPLE_RATE, synthetic_song  # noqa: E402

from jaxsep import host_memory  # noqa: E402
from jaxsep.bench import harness  # noqa: E402

WAYS = ("ladder", "exact")


def lengths(tracks: int, low: float, high: float) -> list[float]:
    return [float(s) for s in np.linspace(low, high, tracks)]


def score_set(way: str, seconds: list[float]) -> dict:
    """In this process: score every song once; seconds for the set and programs compiled."""
    host_memory.retain_freed_memory()
    from jaxsep.evaluate import bsseval

    if way == "exact":  # a ladder this fine pads nothing: every length is its own program
        bsseval.LENGTHS_PER_OCTAVE = 1 << 40
    songs = [synthetic_song(s, 4, seed=k) for k, s in enumerate(seconds)]
    warm = synthetic_song(min(seconds) / 2, 4, seed=99)  # compiles the length-free filter solve
    bsseval.bss_eval_v4(*warm, window=SAMPLE_RATE, hop=SAMPLE_RATE)
    before = bsseval._statistics_program._cache_size()
    start = time.perf_counter()
    for references, estimates in songs:
        bsseval.bss_eval_v4(references, estimates, window=SAMPLE_RATE, hop=SAMPLE_RATE)
    return {
        "seconds": time.perf_counter() - start,
        "programs": bsseval._statistics_program._cache_size() - before,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=12)
    parser.add_argument("--seconds", type=float, nargs=2, default=(24.0, 36.0))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--way", choices=WAYS, help=argparse.SUPPRESS)  # the child process
    parser.add_argument("-o", "--out", type=Path, help="append the JSON record to this file")
    args = parser.parse_args()
    seconds = lengths(args.tracks, *args.seconds)
    if args.way:
        print(json.dumps(score_set(args.way, seconds)))
        return
    load_start = harness.load_average()
    runs: dict[str, list[dict]] = {way: [] for way in WAYS}
    for round_ in range(args.repeats):
        for way in WAYS if round_ % 2 == 0 else WAYS[::-1]:
            child = [sys.executable, __file__, "--way", way, "--tracks", str(args.tracks)]
            child += ["--seconds", *map(str, args.seconds)]
            result = subprocess.run(child, capture_output=True, text=True, check=True)
            runs[way].append(json.loads(result.stdout.strip().splitlines()[-1]))
            print(round_, way, runs[way][-1], flush=True)
    import jax

    median = {way: statistics.median(r["seconds"] for r in runs[way]) for way in WAYS}
    record = {
        "bench": "bsseval_tracks",
        "signals": f"{args.tracks} songs of {args.seconds[0]:g}-{args.seconds[1]:g} s x 4 stereo "
        "sources, 44.1 kHz, window=hop=1 s",
        "device": f"{harness.cpu_model_name()} ({os.cpu_count()} cores)",
        "jax_version": jax.__version__,
        **{f"{way}_s": round(median[way], 2) for way in WAYS},
        **{f"{way}_programs": runs[way][0]["programs"] for way in WAYS},
        "ladder_over_exact": round(median["ladder"] / median["exact"], 3),
        "repeats": args.repeats,
        "load_avg_start": load_start,
    }
    harness.finish_tool_record(record, args.out)


if __name__ == "__main__":
    main()

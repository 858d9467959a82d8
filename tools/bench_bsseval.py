"""Time museval's BSSEval v4 against jaxsep's JAX version on one MUSDB-sized song.

30 s x 4 stereo sources at 44.1 kHz, window = hop = 1 s (the SiSEC setting). Prints one JSON
record: museval seconds (median of `--museval-repeats`), JAX seconds after compilation (median
of `--repeats`), compile seconds (first call minus a compiled call), speed-up and the largest
|difference| in dB over all finite scores, both sides' process CPU seconds (fairer on a shared,
loaded machine), and what ran where (device, versions, git revision, command, load average).
`-o FILE` also appends the record to FILE, where `tools/bench_table.py` finds it.

    .venv/bin/python tools/bench_bsseval.py [--seconds 30] [--sources 4] [--repeats 3] \
        [-o benchmarks/results/cpu/bsseval.jsonl]

`--set 24,26.5,...` instead scores one song of each length in turn, once each, in this fresh
process (JAX only): what `jaxsep evaluate` pays over a dataset whose tracks all differ in
length, compilation included. Its record gives the total and per-song seconds, the process's
peak resident memory and the most any one evaluation added to what the process held before it
(Linux: the peak is reset before each song).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time
from pathlib import Path

import numpy as np
import scipy.signal

from jaxsep import host_memory
from jaxsep.bench import harness
from jaxsep.evaluate.bsseval import bss_eval_v4

SAMPLE_RATE = 44100


def synthetic_song(seconds: float, n_sources: int, seed: int = 0):
    """Coloured-noise references and estimates with leakage, noise and filtering."""
    rng = np.random.default_rng(seed)
    length = int(seconds * SAMPLE_RATE)
    references = rng.standard_normal((n_sources, length, 2))
    for s in range(n_sources):  # different spectral tilts, like drums/bass/other/vocals
        pole = 0.2 + 0.7 * s / max(n_sources - 1, 1)
        references[s] = scipy.signal.lfilter([1.0], [1.0, -pole], references[s], axis=0)
    leakage = 0.15 * np.roll(references, 1, axis=0)
    estimates = references + leakage + 0.1 * rng.standard_normal(references.shape)
    estimates = scipy.signal.lfilter([0.9, 0.1], [1.0], estimates, axis=1)
    return references, estimates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--sources", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--museval-repeats", type=int, default=1)
    parser.add_argument(
        "--set",
        type=lambda text: [float(x) for x in text.split(",")],
        help="comma-separated song lengths in seconds: time scoring one song of each, in turn",
    )
    parser.add_argument("-o", "--out", type=Path, help="append the JSON record to this file")
    args = parser.parse_args()
    host_memory.retain_freed_memory()  # as the jaxsep command line does; numpy shares it too
    if args.set:
        run_set(args)
        return
    import jax
    import museval

    references, estimates = synthetic_song(args.seconds, args.sources)
    load_start = harness.load_average()

    def run_museval():
        begin, begin_cpu = time.perf_counter(), time.process_time()
        result = museval.evaluate(
            references, estimates, win=SAMPLE_RATE, hop=SAMPLE_RATE, mode="v4", padding=False
        )
        return result, time.perf_counter() - begin, time.process_time() - begin_cpu

    def run_jax():
        begin, begin_cpu = time.perf_counter(), time.process_time()
        result = bss_eval_v4(references, estimates, window=SAMPLE_RATE, hop=SAMPLE_RATE)
        return result, time.perf_counter() - begin, time.process_time() - begin_cpu

    museval_runs = [run_museval() for _ in range(args.museval_repeats)]
    expected = museval_runs[0][0]
    got, first_s, _ = run_jax()
    runs = [run_jax() for _ in range(args.repeats)]
    museval_s = statistics.median(run[1] for run in museval_runs)
    jax_s = statistics.median(run[1] for run in runs)
    diffs = [np.abs(np.asarray(e) - g) for e, g in zip(expected, got)]
    max_diff = max(float(np.nanmax(d[np.isfinite(d)])) for d in diffs)
    record = {
        "bench": "bsseval",
        "signals": f"{args.seconds:g} s x {args.sources} stereo sources, 44.1 kHz, window=hop=1 s",
        "device": f"{harness.cpu_model_name()} ({os.cpu_count()} cores)",
        "museval_s": round(museval_s, 3),
        "jax_s": round(jax_s, 3),
        "compile_s": round(first_s - jax_s, 3),
        "speedup": round(museval_s / jax_s, 1),
        "max_abs_diff_db": max_diff,
        # CPU seconds (all threads): a fairer comparison when the machine is shared
        "museval_cpu_s": round(statistics.median(run[2] for run in museval_runs), 3),
        "jax_cpu_s": round(statistics.median(run[2] for run in runs), 3),
        "load_avg_start": load_start,
        "jax_version": jax.__version__,
        "museval_version": _version("museval"),
    }
    harness.finish_tool_record(record, args.out)


def run_set(args: argparse.Namespace) -> None:
    """Score one synthetic song per length of `args.set`, in turn; one record for the set."""
    import jax

    load_start = harness.load_average()
    per_song, added_gb = [], []
    for index, seconds in enumerate(args.set):
        references, estimates = synthetic_song(seconds, args.sources, seed=index)
        held = _reset_peak_rss()
        begin = time.perf_counter()
        scores = bss_eval_v4(references, estimates, window=SAMPLE_RATE, hop=SAMPLE_RATE)
        per_song.append(round(time.perf_counter() - begin, 3))
        if held is not None:
            added_gb.append(round((_status_kib("VmHWM") - held) / 2**20, 2))
        assert np.isfinite(scores[0]).all(), f"non-finite SDR for the {seconds} s song"
        del references, estimates, scores
    record = {
        "bench": "bsseval_set",
        "signals": (
            f"{len(args.set)} songs of {min(args.set):g}-{max(args.set):g} s x {args.sources} "
            "stereo sources, 44.1 kHz, window=hop=1 s"
        ),
        "song_seconds": args.set,
        "device": f"{harness.cpu_model_name()} ({os.cpu_count()} cores)",
        "total_s": round(sum(per_song), 3),
        "per_song_s": per_song,
        # ru_maxrss is in KiB on Linux
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        # the most one song's evaluation added to the resident memory held before it (inputs)
        "peak_added_gb": max(added_gb, default=None),
        "added_gb_per_song": added_gb,
        "load_avg_start": load_start,
        "jax_version": jax.__version__,
    }
    harness.finish_tool_record(record, args.out)


def _status_kib(field: str) -> int:
    """A `/proc/self/status` memory field (`VmRSS`, `VmHWM`) in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _reset_peak_rss() -> int | None:
    """Reset this process's peak resident memory to its current one (Linux `clear_refs` 5) and
    return it in KiB; None where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _status_kib("VmRSS")
    except (OSError, KeyError):
        return None


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"


if __name__ == "__main__":
    main()

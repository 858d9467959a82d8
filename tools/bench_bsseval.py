"""Time museval's BSSEval v4 against jaxsep's JAX version on one MUSDB-sized song.

30 s x 4 stereo sources at 44.1 kHz, window = hop = 1 s (the SiSEC setting). Prints one JSON
line: museval seconds, JAX seconds after compilation (median of `--repeats`), compile seconds
(first call minus a compiled call), speed-up and the largest |difference| in dB over all
finite scores, plus both sides' process CPU seconds (fairer on a shared, loaded machine).

    .venv/bin/python tools/bench_bsseval.py [--seconds 30] [--sources 4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import scipy.signal

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
    args = parser.parse_args()
    references, estimates = synthetic_song(args.seconds, args.sources)

    import museval

    start, start_cpu = time.perf_counter(), time.process_time()
    expected = museval.evaluate(
        references, estimates, win=SAMPLE_RATE, hop=SAMPLE_RATE, mode="v4", padding=False
    )
    museval_s = time.perf_counter() - start
    museval_cpu_s = time.process_time() - start_cpu

    def run_jax():
        begin, begin_cpu = time.perf_counter(), time.process_time()
        result = bss_eval_v4(references, estimates, window=SAMPLE_RATE, hop=SAMPLE_RATE)
        return result, time.perf_counter() - begin, time.process_time() - begin_cpu

    got, first_s, _ = run_jax()
    runs = [run_jax() for _ in range(args.repeats)]
    jax_s = float(np.median([run[1] for run in runs]))
    jax_cpu_s = float(np.median([run[2] for run in runs]))
    diffs = [np.abs(np.asarray(e) - g) for e, g in zip(expected, got)]
    max_diff = max(float(np.nanmax(d[np.isfinite(d)])) for d in diffs)
    print(
        json.dumps(
            {
                "museval_s": round(museval_s, 3),
                "jax_s": round(jax_s, 3),
                "compile_s": round(first_s - jax_s, 3),
                "speedup": round(museval_s / jax_s, 1),
                "max_abs_diff_db": max_diff,
                # CPU seconds (all threads): a fairer comparison when the machine is shared
                "museval_cpu_s": round(museval_cpu_s, 3),
                "jax_cpu_s": round(jax_cpu_s, 3),
            }
        )
    )


if __name__ == "__main__":
    main()

"""Time `jaxsep` commands compiling every program against loading them from the persistent
compilation cache (`jaxsep/compile_cache.py`).

Writes a small corpus of tones and noise in MUSDB18-HQ layout (`jaxsep.bench.pipeline`'s, so no
soundfont is needed and the tool runs on the GPU host too), then runs, each in a fresh process
as a user runs them:

* train: `jaxsep train --config configs/xumx.py` (or `--config`; the full-size X-UMX: input
  statistics, `--steps` training steps of 2 x 1 s, one validation pass, checkpoint, model
  export) in a new workdir;
* separate: `jaxsep separate` of one test song with the model that training wrote;

each three ways, interleaved over `--repeats` rounds: `--compile-cache off`, a cold cache (an
empty directory) and a warm one (the directory the round's cold run filled). Prints one JSON
record (median wall seconds per command and way, warm / off, the programs and megabytes the two
commands left in the cache); `-o FILE` appends it.

    .venv/bin/python tools/bench_compile_cache.py [--repeats 3] \
        [-o benchmarks/results/cpu/compile_cache.jsonl]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from jaxsep.bench import harness
from jaxsep.bench.commands import run_jaxsep, short_train_args
from jaxsep.bench.pipeline import SAMPLE_RATE, write_corpus
from jaxsep.compile_cache import ENTRY_SUFFIX

WAYS = ("off", "cold", "warm")


def jaxsep(*args: str) -> float:
    """Wall seconds of `jaxsep ARGS` in a fresh process. Every call names `--compile-cache`,
    which overrides `$JAXSEP_COMPILE_CACHE`."""
    return run_jaxsep(*args)[0]


def device_name() -> str:
    """The accelerator JAX runs on, else the CPU model (the children ran on the same)."""
    import jax

    device = jax.devices()[0]
    if device.platform == "cpu":
        return f"{harness.cpu_model_name()} ({os.cpu_count()} cores)"
    return device.device_kind


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2, help="training steps per train run")
    parser.add_argument(
        "--config", default="configs/xumx.py", help="training config (`:tiny` for a quick check)"
    )
    parser.add_argument("-o", "--out", type=Path, help="append the JSON record to this file")
    args = parser.parse_args()
    load_start = harness.load_average()
    times: dict[str, dict[str, list[float]]] = {c: {w: [] for w in WAYS} for c in ("train", "sep")}
    cache_programs, cache_bytes = [], []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        corpus = tmp / "corpus"
        write_corpus(corpus / "train", songs=3, seconds=8.0)
        write_corpus(corpus / "test", songs=1, seconds=8.0)
        song = corpus / "test" / "song0" / "mixture.wav"
        stems = [sf.read(path, dtype="float32")[0] for path in song.parent.glob("*.wav")]
        sf.write(song, np.sum(stems, axis=0), SAMPLE_RATE, subtype="FLOAT")
        for round_ in range(args.repeats):
            cache = tmp / f"cache{round_}"
            for way in WAYS:
                setting = "off" if way == "off" else str(cache)
                workdir = tmp / f"run{round_}-{way}"
                train = short_train_args(args.config, corpus, workdir, args.steps)
                times["train"][way].append(jaxsep("--compile-cache", setting, *train))
                sep_args = [str(song), "--model", str(workdir / "model"), "-o", str(workdir / "s")]
                times["sep"][way].append(jaxsep("--compile-cache", setting, "separate", *sep_args))
                if way == "cold":  # what the two commands left in the cache
                    files = [p for p in cache.rglob("*") if p.is_file()]
                    cache_programs.append(sum(p.name.endswith(ENTRY_SUFFIX) for p in files))
                    cache_bytes.append(sum(p.stat().st_size for p in files))
                print(round_, way, {c: round(t[way][-1], 2) for c, t in times.items()}, flush=True)
            shutil.rmtree(cache)
    import jax

    record = {
        "bench": "compile_cache",
        "what": f"wall seconds of fresh `jaxsep` processes: train {args.config} ({args.steps} "
        "steps of 2 x 1 s), separate an 8 s song with its model",
        "cache_programs": max(cache_programs),
        "cache_mb": round(max(cache_bytes) / 1e6, 1),
        "device": device_name(),
        "jax_version": jax.__version__,
        "repeats": args.repeats,
        "load_avg_start": load_start,
    }
    for command, by_way in times.items():
        for way, values in by_way.items():
            record[f"{command}_{way}_s"] = round(statistics.median(values), 2)
        record[f"{command}_warm_over_off"] = round(
            statistics.median(by_way["warm"]) / statistics.median(by_way["off"]), 3
        )
    harness.finish_tool_record(record, args.out)


if __name__ == "__main__":
    main()

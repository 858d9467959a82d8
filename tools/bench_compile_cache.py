"""Time `jaxsep` commands compiling every program against loading them from the persistent
compilation cache (`jaxsep/compile_cache.py`).

Writes a small synthetic corpus (`jaxsep synth`), then runs, each in a fresh process as a user
runs them:

* train: `jaxsep train --config configs/xumx.py` (the full-size X-UMX: statistics, `--steps`
  training steps of 2 x 1 s, one validation pass, checkpoint, model export) in a new workdir;
* separate: `jaxsep separate` of one test song with the model that training wrote;

each three ways, interleaved over `--repeats` rounds: `--compile-cache off`, a cold cache (an
empty directory) and a warm one (the directory the round's cold run filled). Prints one JSON
record (median wall seconds per command and way, warm / off); `-o FILE` appends it.

    .venv/bin/python tools/bench_compile_cache.py [--repeats 3] \
        [-o benchmarks/results/cpu/compile_cache.jsonl]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from jaxsep.bench import harness

REPO = Path(__file__).resolve().parents[1]
WAYS = ("off", "cold", "warm")


def jaxsep(*args: str) -> float:
    """Wall seconds of `jaxsep ARGS` in a fresh process (raises with its stderr if it fails)."""
    env = {k: v for k, v in os.environ.items() if k != "JAXSEP_COMPILE_CACHE"}
    command = [sys.executable, "-m", "jaxsep.cli", *args]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(args[:4])}...: {result.stderr.strip()}")
    return seconds


def train_args(corpus: Path, workdir: Path, steps: int) -> list[str]:
    overrides = {
        "num_steps": steps,
        "batch_size": 2,
        "data.seconds": 1.0,
        "data.stats_examples": 4,
        "data.eval_examples": 2,
        "eval_every": steps,
        "checkpoint_every": steps,
        "log_every": steps,
    }
    config = [f"--config.{key}={value}" for key, value in overrides.items()]
    return ["train", "--config", "configs/xumx.py", *config, "--workdir", str(workdir)] + [
        "--data",
        str(corpus),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2, help="training steps per train run")
    parser.add_argument("-o", "--out", type=Path, help="append the JSON record to this file")
    args = parser.parse_args()
    load_start = harness.load_average()
    times: dict[str, dict[str, list[float]]] = {c: {w: [] for w in WAYS} for c in ("train", "sep")}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        corpus = tmp / "corpus"
        jaxsep("--compile-cache", "off", "synth", str(corpus), "--songs", "4", "--seconds", "8")
        song = sorted((corpus / "test").iterdir())[0] / "mixture.wav"
        for round_ in range(args.repeats):
            cache = tmp / f"cache{round_}"
            for way in WAYS:
                setting = "off" if way == "off" else str(cache)
                workdir = tmp / f"run{round_}-{way}"
                times["train"][way].append(
                    jaxsep("--compile-cache", setting, *train_args(corpus, workdir, args.steps))
                )
                sep_args = [str(song), "--model", str(workdir / "model"), "-o", str(workdir / "s")]
                times["sep"][way].append(jaxsep("--compile-cache", setting, "separate", *sep_args))
                print(round_, way, {c: round(t[way][-1], 2) for c, t in times.items()}, flush=True)
            shutil.rmtree(cache)
    import jax

    record = {
        "bench": "compile_cache",
        "what": "wall seconds of fresh `jaxsep` processes: train configs/xumx.py (full-size "
        f"X-UMX, {args.steps} steps of 2 x 1 s), separate an 8 s song with its model",
        "device": f"{harness.cpu_model_name()} ({os.cpu_count()} cores)",
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

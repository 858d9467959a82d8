"""Run `jaxsep` commands in fresh processes, as a user does, for the tools that time them
(`tools/bench_compile_cache.py`, `tools/bench_evaluate.py`)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_jaxsep(*args: str) -> tuple[float, float]:
    """`(wall seconds, peak resident GB)` of `jaxsep ARGS` in a fresh process (raises with its
    stderr if it fails). The peak is the child's own (`wait4`), not the largest of all children."""
    command = [sys.executable, "-m", "jaxsep.cli", *args]
    start = time.perf_counter()
    with subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    ) as process:
        stderr = process.stderr.read()
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    if process.returncode != 0:
        raise SystemExit(f"jaxsep {' '.join(args[:4])}...: {stderr.strip()}")
    return seconds, usage.ru_maxrss / 2**20  # ru_maxrss is in KiB on Linux


def short_train_args(config: str, corpus: Path, workdir: Path, steps: int) -> list[str]:
    """`jaxsep train` of `config` for `steps` steps of 2 x 1 s (input statistics, one validation
    pass, checkpoint and model export included) on `corpus`: a model to separate with."""
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
    overrides = [f"--config.{key}={value}" for key, value in overrides.items()]
    return [
        "train",
        "--config",
        config,
        *overrides,
        "--workdir",
        str(workdir),
        "--data",
        str(corpus),
    ]

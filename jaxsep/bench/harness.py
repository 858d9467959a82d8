"""Timing, statistics and the run's environment: the framework-neutral half of `jaxsep bench`.

A timed call is synchronised (`jax.block_until_ready` / `torch.cuda.synchronize`) so the clock
stops when the device is done, not when the work was queued. Warm-up calls are not timed.
"""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]


def time_calls(call: Callable[[], Any], sync: Callable[[Any], Any], reps: int, warmup: int) -> list:
    """Seconds of each of `reps` synchronised calls of `call()`, after `warmup` untimed calls."""
    for _ in range(warmup):
        sync(call())
    seconds = []
    for _ in range(reps):
        start = time.perf_counter()
        sync(call())
        seconds.append(time.perf_counter() - start)
    return seconds


def summarize(seconds: list[float]) -> dict[str, float]:
    """Median, min and max of a list of timings (seconds)."""
    return {
        "median_s": statistics.median(seconds),
        "min_s": min(seconds),
        "max_s": max(seconds),
        "reps": len(seconds),
    }


def throughput(median_s: float, batch_size: int, audio_seconds: float) -> dict[str, float]:
    """examples/s and audio-seconds/s at the median step time."""
    examples = batch_size / median_s
    return {"examples_per_s": examples, "audio_seconds_per_s": examples * audio_seconds}


RESULTS_PATHSPEC = ":(exclude)benchmarks/results"


def git_revision() -> str:
    """`git describe`-like revision of the checkout the package runs from ("+dirty" if its code
    is edited; the records the bench appends to `benchmarks/results/` do not count)."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", RESULTS_PATHSPEC],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return rev + ("+dirty" if dirty else "")


def cpu_model_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def device_slug(name: str) -> str:
    """Folder name for a device: "cpu" for any CPU, else e.g. "nvidia-h100-80gb-hbm3"."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return slug or "unknown"


def load_average() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def write_jsonl(records: list[dict], path: Path) -> None:
    """Append `records` to `path` as JSON lines (creating its folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        for record in records:
            f.write(json.dumps(record, sort_keys=True) + "\n")

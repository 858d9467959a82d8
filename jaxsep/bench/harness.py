"""Timing, statistics and the run's environment: the framework-neutral half of `jaxsep bench`.

A timed call is synchronised (`jax.block_until_ready` / `torch.cuda.synchronize`) so the clock
stops when the device is done, not when the work was queued. Warm-up calls are not timed. The
frameworks' calls are timed interleaved, round by round, so that a shared host slowing down for a
while slows both sides alike instead of whichever happened to be timed then.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import re
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from jaxsep.errors import first_line
from jaxsep.host_cpu import cpuinfo_fields, read_cpuinfo

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclasses.dataclass
class Timed:
    """One framework variant's calls for the interleaved timer.

    `result` is its record in the making (a variant that fails sets `result["error"]` and drops
    out of the rotation); `begin(mode)` runs before a mode's calls (e.g. `module.train()`, reset
    the peak-memory counter) and `end(mode)` after them (e.g. read it back).
    """

    result: dict[str, Any]
    train: Callable[[], Any]
    infer: Callable[[], Any]
    sync: Callable[[Any], Any]
    begin: Callable[[str], None] = lambda mode: None
    end: Callable[[str], None] = lambda mode: None
    fallible: bool = False  # an exception is a result (torch.compile), not a crash


def error_summary(error: BaseException) -> str:
    """`Type: first line` (at most 300 characters of it): a failed variant's record field."""
    return f"{type(error).__name__}: {first_line(error)[:300]}"


def _guarded(timed: Timed, mode: str) -> Callable[[], Any]:
    call = getattr(timed, mode)

    def run() -> Any:
        if "error" in timed.result:
            return None
        try:
            return timed.sync(call())
        except Exception as e:  # noqa: BLE001 - only for fallible variants, see below
            if not timed.fallible:
                raise
            timed.result["error"] = error_summary(e)
            return None

    return run


def time_interleaved(
    calls: Sequence[Callable[[], Any]], reps: int, warmup: int
) -> list[list[float]]:
    """Seconds of `reps` calls of each synchronised `call`, interleaved: each round calls every
    one once, starting one further along each round (so none always follows the same other).
    `warmup` untimed calls of each come first."""
    for call in calls:
        for _ in range(warmup):
            call()
    seconds: list[list[float]] = [[] for _ in calls]
    for round_ in range(reps):
        for k in range(len(calls)):
            i = (round_ + k) % len(calls)
            start = time.perf_counter()
            calls[i]()
            seconds[i].append(time.perf_counter() - start)
    return seconds


def time_mode(mode: str, variants: Sequence[Timed], reps: int, warmup: int) -> None:
    """Time `mode` ("train" or "infer") of every variant interleaved; each variant's result gets
    `result[mode]` (summary) and `result[mode + "_seconds"]` (every call, in round order)."""
    live = [v for v in variants if "error" not in v.result]
    for v in live:
        v.begin(mode)
    seconds = time_interleaved([_guarded(v, mode) for v in live], reps, warmup)
    for v, s in zip(live, seconds, strict=True):
        if "error" not in v.result:
            v.result[mode] = summarize(s)
            v.result[f"{mode}_seconds"] = s
            v.end(mode)


def paired_ratio(numerator: Sequence[float], denominator: Sequence[float]) -> float:
    """Median over rounds of numerator[i] / denominator[i]: the speedup of two interleaved
    series, each round's calls measured back to back."""
    return statistics.median(n / d for n, d in zip(numerator, denominator, strict=True))


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


# Widest vector extension first: the one XLA:CPU's and oneDNN's kernels are built for.
_VECTOR_ISAS = (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX"), ("sve", "SVE"),
                ("asimd", "NEON"))  # fmt: skip


def cpu_name_from_cpuinfo(cpuinfo: str) -> str | None:
    """ "<model name> (<widest vector extension>)" from /proc/cpuinfo's text, None if unnamed.

    The extension is part of the name because one model name covers hosts that differ in it:
    this project's "AMD EPYC" CI hosts came with and without AVX-512, and every kernel of both
    frameworks ran ~2x slower without it, so their figures must not share a table row.
    """
    return _cpu_name(*cpuinfo_fields(cpuinfo))


def _cpu_name(model: str | None, flags: list[str]) -> str | None:
    isa = next((name for flag, name in _VECTOR_ISAS if flag in flags), None)
    if model is None:
        return None
    return f"{model} ({isa})" if isa else model


def cpu_model_name() -> str:
    return _cpu_name(*read_cpuinfo()) or platform.processor() or "cpu"


def device_slug(name: str) -> str:
    """Folder name for a device: "cpu" for any CPU, else e.g. "nvidia-h100-80gb-hbm3"."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return slug or "unknown"


def load_average() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def finish_tool_record(record: dict, out: Path | None) -> dict:
    """Complete a `tools/` benchmark's record with where and when it ran (load average at the
    end, command line, git revision, time), print it as one JSON line and append it to `out`."""
    import datetime
    import shlex
    import sys

    record = record | {
        "load_avg_end": load_average(),
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "git_revision": git_revision(),
        "timestamp": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    print(json.dumps(record))
    if out is not None:
        write_jsonl([record], out)
    return record


def write_jsonl(records: list[dict], path: Path) -> None:
    """Append `records` to `path` as JSON lines (creating its folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        for record in records:
            f.write(json.dumps(record, sort_keys=True) + "\n")

"""`jaxsep bench`: run the cases, check that both frameworks compute the same function, time them
and write one JSON line per (model, mode, JAX variant, PyTorch variant).

Order per model: build the case (same weights in both), PyTorch eager output and first train
loss, each JAX variant's output and first train loss, assert they match (max |a - b| / max |a|
<= `parity_tol`), and only then time. Speedup = PyTorch median time / JAX median time (> 1:
JAX is faster); `speedup_min` uses the fastest repetition, steadier on a loaded machine.

Reduced precision (tf32, bf16): two implementations that round differently cannot agree to
float32 tolerances, and the VQ-VAE's nearest-code choice turns small roundings into other codes.
So the float32 inference of both is compared first (same function, `PARITY_TOL`), and each
framework's reduced-precision output is then scored against that float32 reference (relative
L2 error, recorded as `lowp_rel_l2_jax` / `lowp_rel_l2_torch`: the accuracy cost of the
precision); a JAX deviation above `LOWP_MAX_REL_L2` stops the run as a broken path.
"""

from __future__ import annotations

import datetime
import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxsep import host_memory
from jaxsep.bench import harness
from jaxsep.bench.flops import peak_bandwidth, peak_flops, roofline_seconds
from jaxsep.errors import JaxsepError

ALL = ("xumx", "umx", "chimera", "vqvae", "vggish", "pipeline")
RESULTS_ROOT = Path("benchmarks/results")
PRECISIONS = ("fp32", "tf32", "bf16")
# every JAX variant some model has (scan/cudnn: LSTM backends; xla/remat: the VQ-VAE); a known
# name a model or device lacks falls back to its defaults, an unknown one is a typo
JAX_VARIANTS = ("scan", "cudnn", "xla", "remat")
PARITY_TOL = 1e-4  # max |JAX - torch| / max |JAX| of the float32 outputs
# Reduced precision vs float32, relative L2. Measured on CPU for bf16 (`--size cpu`): X-UMX, UMX,
# ChimeraNet and VGGish below 1e-2, the VQ-VAE 0.08 (code flips) in both frameworks alike.
LOWP_MAX_REL_L2 = 0.25


def configure_threads(threads: int | None) -> None:
    """Restrict this process to `threads` CPU threads, before JAX's backend starts.

    1 thread = pinned to one core, XLA's Eigen pool off, torch intra/inter-op 1 (the setup of
    reference/perf.md §0); N > 1 = torch and XLA limited to N threads, not pinned.
    """
    if threads is None:
        return
    if threads < 1:
        raise JaxsepError(f"bench: --threads must be >= 1, got {threads}")
    if _jax_started():
        raise JaxsepError(
            "bench: --threads must be set before JAX starts (run it in a new process)"
        )
    flags = os.environ.get("XLA_FLAGS", "")
    if threads == 1:
        flags += " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        if hasattr(os, "sched_setaffinity"):
            cores = sorted(os.sched_getaffinity(0))
            os.sched_setaffinity(0, {cores[-1]})
    os.environ["XLA_FLAGS"] = flags.strip()
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:  # already set once in this process
        pass


def share_device_memory() -> None:
    """Let JAX and PyTorch share one GPU in this process: before JAX's backend starts, turn off
    its default of reserving 75% of the GPU's memory up front (`XLA_PYTHON_CLIENT_PREALLOCATE`),
    which would leave PyTorch a quarter for the paper-size models. JAX then grows its pool on
    demand and keeps it (the warm-up calls absorb the growth). A value already set is kept."""
    if not _jax_started():
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")


def _jax_started() -> bool:
    """Whether JAX's backends are up (then environment settings for them come too late)."""
    from jax._src import xla_bridge

    return xla_bridge.backends_are_initialized()


def _devices(device: str | None):
    import jax
    import torch

    want = device or ("gpu" if jax.default_backend() == "gpu" else "cpu")
    if want not in ("cpu", "gpu"):
        raise JaxsepError(f"bench: --device must be cpu or gpu, got {want!r}")
    if want == "gpu":
        if jax.default_backend() != "gpu" or not torch.cuda.is_available():
            raise JaxsepError(
                f"bench: --device gpu needs a GPU in both frameworks (jax: "
                f"{jax.default_backend()}, torch cuda: {torch.cuda.is_available()})"
            )
        jax_device = jax.devices("gpu")[0]
        return want, jax_device, torch.device("cuda:0"), jax_device.device_kind
    return want, jax.devices("cpu")[0], torch.device("cpu"), harness.cpu_model_name()


def environment(
    device_kind: str, device_name: str, threads: int | None, precision: str, command: str
) -> dict[str, Any]:
    """Fields shared by every record of a run: what ran where, with which versions."""
    import jax
    import jaxlib
    import torch

    from jaxsep.bench import torch_side

    return {
        "device": device_name,
        "device_kind": device_kind,
        "device_slug": "cpu" if device_kind == "cpu" else harness.device_slug(device_name),
        "threads": threads,
        "cpu_count": os.cpu_count(),
        "precision": precision,
        "jax_version": jax.__version__,
        "jaxlib_version": jaxlib.__version__,
        "torch_version": torch.__version__,
        "torch_cudnn_benchmark": torch_side.CUDNN_BENCHMARK,
        "python": platform.python_version(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "xla_python_client_preallocate": os.environ.get("XLA_PYTHON_CLIENT_PREALLOCATE"),
        # both frameworks share the process, so the host allocator setting applies to both
        "host_malloc": "retain" if host_memory.retaining() else "system",
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "command": command,
        "git_revision": harness.git_revision(),
        "timestamp": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def max_rel_error(a: Any, b: Any) -> float:
    """max |a - b| / max |a| over every array of two same-structured trees."""
    if isinstance(a, dict):
        return max(max_rel_error(a[k], b[k]) for k in a)
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise JaxsepError(f"bench: output shapes differ: JAX {a.shape}, torch {b.shape}")
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(a)), 1e-30))


def rel_l2_error(a: Any, b: Any) -> float:
    """||a - b|| / ||b|| (worst array of two same-structured trees): `b` is the reference."""
    if isinstance(a, dict):
        return max(rel_l2_error(a[k], b[k]) for k in a)
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def _float32_reference(case, variant: str, jax_device, torch_device) -> dict:
    """Float32 inference of both frameworks, checked equal; the reference of a reduced-precision
    run (see the module docstring)."""
    from jaxsep.bench.jax_side import float32_output as jax_output
    from jaxsep.bench.torch_side import float32_output as torch_output

    output = torch_output(case, torch_device)
    jax_out = jax_output(case, variant, jax_device)
    err = _same_outputs(case, f"float32 JAX ({variant})", jax_out, output, PARITY_TOL)
    return {"output": output, "parity_max_rel_err": err}


def _low_precision_accuracy(case, precision: str, jax_result: dict, torch_result: dict, reference):
    """Each framework's `precision` output against the float32 reference."""
    jax_err = rel_l2_error(jax_result["output"], reference["output"])
    torch_err = rel_l2_error(torch_result["output"], reference["output"])
    if not jax_err <= LOWP_MAX_REL_L2:
        raise JaxsepError(
            f"bench {case.model}: JAX {precision} output is {jax_err:.2e} (relative L2) away from "
            f"float32 (> {LOWP_MAX_REL_L2}); the reduced-precision path is broken"
        )
    return {
        "parity_max_rel_err": reference["parity_max_rel_err"],
        "lowp_rel_l2_jax": jax_err,
        "lowp_rel_l2_torch": torch_err,
        "lowp_first_loss_jax": jax_result["first_loss"],
        "lowp_first_loss_torch": torch_result["first_loss"],
    }


def _same_outputs(case, jax_label: str, jax_out: Any, torch_out: Any, tol: float) -> float:
    """max relative error of the JAX output against PyTorch's; above `tol` a JaxsepError."""
    err = max_rel_error(jax_out, torch_out)
    if not err <= tol:
        raise JaxsepError(
            f"bench {case.model}: {jax_label} and PyTorch outputs differ "
            f"(max relative error {err:.2e} > {tol:.0e}); the frameworks compute different functions"
        )
    return err


def _check_parity(case, jax_result: dict, torch_result: dict, tol: float) -> dict[str, float]:
    label = f"JAX ({jax_result['variant']})"
    err = _same_outputs(case, label, jax_result["output"], torch_result["output"], tol)
    out = {"parity_max_rel_err": err}
    if case.deterministic_train:
        a, b = jax_result["first_loss"], torch_result["first_loss"]
        loss_err = abs(a - b) / max(abs(a), 1e-30)
        if not loss_err <= tol:
            raise JaxsepError(
                f"bench {case.model}: first training loss differs (JAX {a:.6g}, torch {b:.6g})"
            )
        out["parity_train_loss_rel_err"] = loss_err
    return out


def _mode_record(
    case, mode: str, jax_r: dict, torch_r: dict, peak: float | None, bandwidth: float | None
) -> dict:
    flops = case.train_flops if mode == "train" else case.forward_flops
    record: dict[str, Any] = {
        "bench": "model",
        "model": case.model,
        "mode": mode,
        "size": case.size,
        "batch_size": case.batch_size,
        "audio_seconds_per_example": case.audio_seconds,
        "jax_variant": jax_r["variant"],
        "torch_variant": torch_r["variant"],
        "flops_per_example": flops,
        "peak_flops": peak,
        "notes": case.notes,
    }
    if mode == "train" and "donated" in jax_r:
        record["jax_donated_state"] = jax_r["donated"]
    if mode == "infer" and "infer_layout_s" in jax_r:  # once per model, like compiling
        record["jax_infer_layout_s"] = jax_r["infer_layout_s"]
    compile_key = "compile_s" if mode == "train" else "infer_compile_s"
    memory_key = f"{mode}_memory_bytes"
    for side, r in (("jax", jax_r), ("torch", torch_r)):
        prefix = "" if side == "jax" else "torch_"
        record[f"{side}_error"] = r.get("error")
        if "error" in r:
            continue
        stats = r[mode]
        record.update({f"{side}_{k}": v for k, v in stats.items() if k != "reps"})
        record["reps"] = stats["reps"]
        rates = harness.throughput(stats["median_s"], case.batch_size, case.audio_seconds)
        record.update({f"{prefix}{k}": v for k, v in rates.items()})
        record[f"{prefix}compile_s"] = r.get(compile_key)
        record[f"{side}_memory_bytes"] = r.get(memory_key)
        record[f"{side}_mfu"] = rates["examples_per_s"] * flops / peak if peak else None
        if side == "torch":
            record["torch_kernels"] = r.get("kernels")
        if mode == "train":
            record[f"{side}_first_loss"] = r["first_loss"]
            record[f"{side}_last_loss"] = r["last_loss"]
    ok = "error" not in torch_r and "error" not in jax_r
    record["speedup"] = record["torch_median_s"] / record["jax_median_s"] if ok else None
    record["speedup_min"] = record["torch_min_s"] / record["jax_min_s"] if ok else None
    record["speedup_paired"] = (
        harness.paired_ratio(torch_r[f"{mode}_seconds"], jax_r[f"{mode}_seconds"]) if ok else None
    )
    record["jax_device_peak_bytes"] = jax_r.get("device_peak_bytes")
    # the roofline bound of the JAX program from XLA's own FLOP and byte counts (GPU peaks only)
    cost = (jax_r.get(f"{mode}_xla_cost") or {}) if case.xla_cost_is_complete else {}
    record["jax_xla_flops"] = cost.get("flops")
    record["jax_bytes_accessed"] = cost.get("bytes_accessed")
    record["peak_bandwidth"] = bandwidth
    roof = (
        roofline_seconds(cost["flops"], cost["bytes_accessed"], peak, bandwidth) if cost else None
    )
    record["jax_roofline_s"] = roof
    jax_s = record.get("jax_median_s")
    record["jax_roofline_fraction"] = roof / jax_s if roof and jax_s else None
    return record


def _never() -> None:
    raise AssertionError("a variant that failed to build is never timed")


def bench_model(
    model: str,
    *,
    size: str,
    device: str | None = None,
    batch_size: int | None = None,
    reps: int = 10,
    warmup: int = 2,
    jax_variants: Sequence[str] | None = None,
    torch_variants: Sequence[str] | None = None,
    precision: str = "fp32",
    parity_tol: float = PARITY_TOL,
    env: dict[str, Any] | None = None,
) -> list[dict]:
    """Records of one model (train and infer, every JAX x PyTorch variant)."""
    from jaxsep.bench.cases import build_case
    from jaxsep.bench.jax_side import prepare_jax
    from jaxsep.bench.torch_side import prepare_torch

    kind, jax_device, torch_device, name = _devices(device)
    case = build_case(model, size, batch_size)
    runnable = case.jax_variants + case.on_request_jax_variants
    # cuDNN's LSTM (jax.experimental.rnn) is float32 only; bf16 runs the scan backend
    usable = [v for v in runnable if precision != "bf16" or v != "cudnn"]
    default = [v for v in usable if v in case.jax_variants]
    variants = default if jax_variants is None else [v for v in usable if v in jax_variants]
    if not variants:  # e.g. --jax-variants cudnn on CPU: fall back to what the device has
        variants = default
    if torch_variants is None:
        torch_variants = ("eager", "compile") if kind == "gpu" else ("eager",)
    load_start = harness.load_average()
    reference = None
    if precision != "fp32":  # before the torch runs: it resets torch's TF32 switches
        reference = _float32_reference(case, variants[0], jax_device, torch_device)

    torch_runs = []
    for variant in torch_variants:
        try:
            torch_runs.append(prepare_torch(case, variant, torch_device, precision))
        except Exception as e:  # noqa: BLE001 - torch.compile failures are results, not crashes
            if variant == "eager":
                raise
            failed = {"variant": variant, "error": harness.error_summary(e)}
            torch_runs.append(harness.Timed(failed, _never, _never, _never))
    eager = torch_runs[0].result
    jax_runs = []
    for variant in variants:
        timed = prepare_jax(case, variant, jax_device, precision)
        if reference is None:
            timed.result["parity"] = _check_parity(case, timed.result, eager, parity_tol)
        else:
            timed.result["parity"] = _low_precision_accuracy(
                case, precision, timed.result, eager, reference
            )
        jax_runs.append(timed)

    # both frameworks' calls interleaved (harness.time_mode); train after one untimed step
    harness.time_mode("train", jax_runs + torch_runs, reps, max(warmup - 1, 0))
    harness.time_mode("infer", jax_runs + torch_runs, reps, warmup)
    jax_results = [t.result for t in jax_runs]
    torch_results = [t.result for t in torch_runs]
    peak = peak_flops(name, precision) if kind == "gpu" else None
    bandwidth = peak_bandwidth(name) if kind == "gpu" else None
    shared = dict(env or {})
    shared.update(load_avg_start=load_start, load_avg_end=harness.load_average())
    records = []
    for j in jax_results:
        for t in torch_results:
            for mode in ("train", "infer"):
                record = _mode_record(case, mode, j, t, peak, bandwidth)
                record.update(j["parity"])
                record.update(shared)
                records.append(record)
    return records


def run_bench(
    model: str,
    *,
    size: str | None = None,
    device: str | None = None,
    batch_size: int | None = None,
    reps: int = 10,
    warmup: int = 2,
    threads: int | None = None,
    jax_variants: Sequence[str] | None = None,
    torch_variants: Sequence[str] | None = None,
    precision: str = "fp32",
    out: Path | None = None,
    command: str | None = None,
    pipeline_workers: Sequence[int] | None = None,
    pipeline_data: Path | None = None,
    log=print,
) -> list[dict]:
    """Benchmark `model` (or "all"), append the records to JSONL files and return them.

    Default output: `benchmarks/results/<device>/<model>.jsonl`; `out` puts every record of the
    run in that one file. Default size: "paper" on a GPU, "cpu" on a CPU.
    """
    if model not in ALL and model != "all":
        raise JaxsepError(f"bench: unknown model {model!r}; use one of {ALL} or all")
    if reps < 1 or warmup < 0:
        raise JaxsepError(f"bench: --steps must be >= 1 and --warmup >= 0, got {reps}, {warmup}")
    if precision not in PRECISIONS:
        raise JaxsepError(
            f"bench: --precision must be one of {', '.join(PRECISIONS)}, got {precision!r}"
        )
    if jax_variants is not None and (not jax_variants or set(jax_variants) - set(JAX_VARIANTS)):
        raise JaxsepError(
            f"bench: --jax-variants takes names from {','.join(JAX_VARIANTS)}, got "
            f"{','.join(jax_variants) or 'nothing'}"
        )
    if pipeline_workers is not None and (not pipeline_workers or min(pipeline_workers) < 0):
        raise JaxsepError(
            f"bench: --workers takes worker counts >= 0 (0: in-process), got "
            f"{','.join(map(str, pipeline_workers)) or 'nothing'}"
        )
    if pipeline_data is not None:
        if model not in ("pipeline", "all"):
            raise JaxsepError(f"bench: --data is the pipeline's corpus; {model!r} reads none")
        if not Path(pipeline_data).is_dir():
            raise JaxsepError(f"{pipeline_data}: not a folder (bench --data)")
    if torch_variants is not None:
        unknown = sorted(set(torch_variants) - {"eager", "compile"})
        if unknown or "eager" not in torch_variants:
            raise JaxsepError(
                f"bench: --torch-variants must include eager and only eager/compile, got "
                f"{','.join(torch_variants)}"
            )
        torch_variants = ("eager", *[v for v in torch_variants if v != "eager"])
    configure_threads(threads)
    share_device_memory()
    kind, _, _, name = _devices(device)
    size = size or ("paper" if kind == "gpu" else "cpu")
    command = command or " ".join(["jaxsep", *sys.argv[1:]])
    env = environment(kind, name, threads, precision, command)
    models = ALL if model == "all" else (model,)
    records: list[dict] = []
    for m in models:
        log(f"bench {m} ({size}, {kind}) ...")
        if m == "pipeline":
            from jaxsep.bench.pipeline import bench_pipeline

            new = bench_pipeline(
                size=size,
                workers=pipeline_workers,
                consumption=_train_rates(records, out, env, size),
                env=env,
                data=pipeline_data,
            )
        else:
            new = bench_model(
                m,
                size=size,
                device=kind,
                batch_size=batch_size,
                reps=reps,
                warmup=warmup,
                jax_variants=jax_variants,
                torch_variants=torch_variants,
                precision=precision,
                env=env,
            )
        path = out or RESULTS_ROOT / env["device_slug"] / f"{m}.jsonl"
        harness.write_jsonl(new, path)
        records += new
    return records


def _train_rates(records: list[dict], out: Path | None, env: dict, size: str) -> dict[str, float]:
    """Best JAX train-step examples/s of each model a pipeline feeds (X-UMX, UMX, ChimeraNet)
    from this run, else from the saved results: the `-o` file and every JSONL file of this
    device's results folder (where a GPU session puts the records of its earlier calls), taking
    only records of this device by name (a CPU's name carries its vector extension)."""
    from jaxsep.bench.pipeline import CONSUMERS
    from jaxsep.bench.table import read_records

    consumers = [m for models in CONSUMERS.values() for m in models]
    candidates = list(records)
    if any(not any(r.get("model") == m for r in candidates) for m in consumers):
        folder = RESULTS_ROOT / env["device_slug"]
        saved = [p for p in (out, folder) if p is not None and Path(p).exists()]
        candidates += read_records([Path(p) for p in saved])
    rates: dict[str, float] = {}
    for r in candidates:
        same = r.get("threads") == env["threads"] and r.get("size") == size
        same = same and r.get("device") == env["device"]
        if r.get("bench") == "model" and r.get("mode") == "train" and same:
            if r.get("model") in consumers and r.get("examples_per_s"):
                rates[r["model"]] = max(rates.get(r["model"], 0.0), r["examples_per_s"])
    return rates

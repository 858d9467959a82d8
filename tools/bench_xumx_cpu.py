"""X-UMX at its full size on this machine: one training step (batch 1 x 6 s, MSE + Adam) and the
separation real-time factor of a 30 s stereo track through `jaxsep.Separator` (one Wiener EM
iteration). Random weights: only the time is measured. Prints one JSON record (with the device,
versions, git revision, command and load average); `-o FILE` also appends it to FILE.

    python tools/bench_xumx_cpu.py [--seconds 30] [--reps 3] [--batch-size 2] [-o FILE]

On a GPU (`tools/gpu_session.sh`), `--seconds 180` is issue 6's 3-minute-track RTF target.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from jaxsep import host_memory

host_memory.retain_freed_memory()  # before JAX starts, as the jaxsep command line does

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from jaxsep.bench import harness  # noqa: E402
from jaxsep.modeldir import Model  # noqa: E402
from jaxsep.models.xumx import XUMX  # noqa: E402
from jaxsep.separate import Separator  # noqa: E402


def _median_time(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=2, help="segments per separator call")
    parser.add_argument("-o", "--out", type=Path, help="append the JSON record to this file")
    args = parser.parse_args()
    load_start = harness.load_average()
    rate = 44100
    module = XUMX()
    rng = np.random.default_rng(0)
    wave = jnp.asarray(rng.standard_normal((1, 6 * rate, 2)) * 0.1, jnp.float32)
    variables = jax.jit(module.init)(jax.random.key(0), wave[:, :8192])
    params, stats = variables["params"], variables["batch_stats"]
    target = jnp.asarray(rng.random((1, 4, 1 + wave.shape[1] // 1024, 2049, 2)), jnp.float32)
    tx = optax.adam(1e-4)

    def step(params, stats, opt_state, key):
        def loss_fn(p):
            out, new = module.apply(
                {"params": p, "batch_stats": stats},
                wave,
                train=True,
                mutable=["batch_stats"],
                rngs={"dropout": key},
            )
            return jnp.mean((out - target) ** 2), new["batch_stats"]

        (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), new_stats, opt_state, loss

    start = time.perf_counter()
    compiled = jax.jit(step).lower(params, stats, tx.init(params), jax.random.key(1)).compile()
    compile_s = time.perf_counter() - start
    state = (params, stats, tx.init(params))
    train_s = _median_time(lambda: compiled(*state, jax.random.key(1)), args.reps)

    model = Model(
        module,
        {"params": params, "batch_stats": stats},
        {
            "model": "xumx",
            "sources": list(module.sources),
            "sample_rate": rate,
            "channels": 2,
        },
    )
    separator = Separator(model, segment=6.0, overlap=0.25, batch_size=args.batch_size)
    track = rng.standard_normal((int(args.seconds * rate), 2)).astype(np.float32) * 0.1
    separator(track[: 8 * rate], rate)  # compile once
    separate_s = _median_time(lambda: np.asarray(separator(track, rate)["vocals"]), args.reps)
    device = jax.devices()[0]
    record = {
        "bench": "xumx_cpu_full_size",
        "train_step_s_batch1x6s": round(train_s, 3),
        "train_compile_s": round(compile_s, 1),
        "separate_s": round(separate_s, 3),
        "track_seconds": args.seconds,
        "rtf": round(separate_s / args.seconds, 4),
        "separator_batch_size": args.batch_size,
        "device": harness.cpu_model_name() if device.platform == "cpu" else device.device_kind,
        "platform": device.platform,
        "jax": jax.__version__,
        "load_avg_start": load_start,
    }
    harness.finish_tool_record(record, args.out)


if __name__ == "__main__":
    main()

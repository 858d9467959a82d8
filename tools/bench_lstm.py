"""Time a stacked BLSTM forward and forward+backward: jaxsep scan (custom VJP / autodiff), flax
linen `Bidirectional(RNN(OptimizedLSTMCell))` and torch `nn.LSTM`. Prints one JSON line.

Single-thread comparison (what perf.md section 2(a) reports):
    taskset -c 1 .venv/bin/python tools/bench_lstm.py --single-thread
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=256, help="sequence length T")
    parser.add_argument("--features", type=int, default=512)
    parser.add_argument("--hidden", type=int, default=256, help="per direction")
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs (median reported)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument(
        "--single-thread",
        action="store_true",
        help="XLA without the Eigen thread pool and torch.set_num_threads(1)",
    )
    parser.add_argument(
        "--variants",
        default="jax_custom_vjp,jax_autodiff,flax_linen,torch",
        help="comma-separated subset to run",
    )
    return parser.parse_args()


def _time_interleaved(
    cases: dict[str, Callable[[], object]], warmup: int, repeats: int
) -> dict[str, dict[str, float]]:
    """Round-robin over the cases so that load from other processes hits all of them alike."""
    for fn in cases.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {n: {"median_s": statistics.median(t), "min_s": min(t)} for n, t in times.items()}


def _jax_cases(args: argparse.Namespace) -> dict[str, tuple[Callable, Callable]]:
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from jaxsep.nn.lstm import LSTM

    x = jax.random.normal(jax.random.key(0), (args.batch, args.steps, args.features))

    class LinenBLSTM(nn.Module):
        """Flax's stock recurrent layers, the baseline perf.md measured as 6.8x slower."""

        @nn.compact
        def __call__(self, y):
            for _ in range(args.layers):
                y = nn.Bidirectional(
                    nn.RNN(nn.OptimizedLSTMCell(args.hidden)),
                    nn.RNN(nn.OptimizedLSTMCell(args.hidden)),
                )(y)
            return y

    common = dict(num_layers=args.layers, bidirectional=True, backend="scan")
    modules = {
        "jax_custom_vjp": LSTM(args.hidden, custom_vjp=True, **common),
        "jax_autodiff": LSTM(args.hidden, custom_vjp=False, **common),
        "flax_linen": LinenBLSTM(),
    }
    cases = {}
    for name, module in modules.items():
        variables = module.init(jax.random.key(1), x)
        forward = jax.jit(module.apply)
        grad = jax.jit(jax.grad(lambda v, inp, m=module: jnp.sum(m.apply(v, inp))))
        cases[name] = (
            lambda f=forward, v=variables: jax.block_until_ready(f(v, x)),
            lambda g=grad, v=variables: jax.block_until_ready(g(v, x)),
        )
    return cases


def _torch_case(args: argparse.Namespace) -> tuple[Callable, Callable]:
    import torch

    torch.manual_seed(0)
    lstm = torch.nn.LSTM(
        args.features, args.hidden, args.layers, bidirectional=True, batch_first=True
    )
    x = torch.randn(args.batch, args.steps, args.features)

    def forward():
        with torch.no_grad():
            return lstm(x)[0]

    def forward_backward():
        lstm.zero_grad(set_to_none=True)
        lstm(x)[0].sum().backward()

    return forward, forward_backward


def main() -> None:
    args = _parse()
    if args.single_thread:
        flags = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flags}".strip()
    wanted = args.variants.split(",")
    cases: dict[str, tuple[Callable, Callable]] = {}
    if any(v != "torch" for v in wanted):
        cases |= {k: v for k, v in _jax_cases(args).items() if k in wanted}
    if "torch" in wanted:
        import torch

        if args.single_thread:
            torch.set_num_threads(1)
        cases["torch"] = _torch_case(args)
    results: dict[str, dict[str, float]] = {name: {} for name in cases}
    for index, phase in enumerate(("fwd", "fwd_bwd")):
        timed = _time_interleaved(
            {name: fns[index] for name, fns in cases.items()}, args.warmup, args.repeats
        )
        for name, stats in timed.items():
            results[name] |= {f"{phase}_{k}": v for k, v in stats.items()}
    if "torch" in results:
        for name, row in results.items():
            if name != "torch":
                for phase in ("fwd", "fwd_bwd"):
                    ratio = row[f"{phase}_median_s"] / results["torch"][f"{phase}_median_s"]
                    row[f"{phase}_jax_over_torch"] = round(ratio, 3)
    import jax

    print(
        json.dumps(
            {
                "bench": "blstm",
                "shape": {
                    "batch": args.batch,
                    "steps": args.steps,
                    "features": args.features,
                    "hidden_per_direction": args.hidden,
                    "layers": args.layers,
                },
                "device": jax.default_backend(),
                "single_thread": args.single_thread,
                "affinity": sorted(os.sched_getaffinity(0)),
                "load_average_1m": os.getloadavg()[0],
                "repeats": args.repeats,
                "python": platform.python_version(),
                "jax": jax.__version__,
                "results": results,
                "command": " ".join(sys.argv),
            }
        )
    )


if __name__ == "__main__":
    main()

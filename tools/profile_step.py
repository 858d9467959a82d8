"""Where the time of one benchmark case goes: a jax.profiler trace, summed per XLA op.

Builds the `jaxsep bench` case (same model, weights and batch), compiles its training step
(forward, loss, backward, Adam) or its inference exactly as the bench does, times it, then traces
a few calls and prints the slowest thunks and the time per source-level op (the HLO `op_name`
metadata, e.g. ``XUMX._fused_recur/while``). This is how the LSTM weight-relayout copies in
`jaxsep.nn.lstm` were found.

    .venv/bin/python tools/profile_step.py xumx train --threads 1
    .venv/bin/python tools/profile_step.py chimera infer --size cpu --top 30
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import re
import statistics
import tempfile
import time


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=("xumx", "umx", "chimera", "vqvae", "vggish"))
    parser.add_argument("mode", choices=("train", "infer"))
    parser.add_argument("--size", default="cpu", choices=("tiny", "cpu", "paper"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=None, help="as `jaxsep bench`")
    parser.add_argument("--calls", type=int, default=5, help="traced calls")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument(
        "--host-malloc",
        choices=("retain", "system"),
        default="retain",
        help="as `jaxsep --host-malloc`: retain freed host memory (the CLI default) or not",
    )
    parser.add_argument(
        "--donate",
        choices=("auto", "yes", "no"),
        default="auto",
        help="donate the train state (auto: as the bench and trainer, only on accelerators)",
    )
    return parser.parse_args()


def _compiled(case, mode: str, donate: str = "auto"):
    """The bench's own compiled programs (`jaxsep.bench.jax_side.compile_case`) and a call."""
    import jax

    from jaxsep.bench.jax_side import compile_case

    choice = {"auto": None, "yes": True, "no": False}[donate]
    c = compile_case(case, case.jax_variants[0], jax.devices()[0], donate=choice)
    if mode == "infer":
        return c.infer, lambda: jax.block_until_ready(c.infer(c.infer_variables, c.x))
    holder = {"ts": c.ts}

    def run():
        holder["ts"], value = c.train(holder["ts"], c.x, c.target, c.key)
        return jax.block_until_ready(value)

    return c.train, run


def _op_names(hlo_text: str) -> dict[str, str]:
    names = {}
    for line in hlo_text.splitlines():
        match = re.match(r"\s*(?:ROOT )?%([\w.\-]+) = .*?op_name=\"([^\"]+)\"", line)
        if match:
            names[match.group(1)] = match.group(2)
    return names


def main() -> None:
    args = _parse()
    if args.host_malloc == "retain":
        from jaxsep.host_memory import retain_freed_memory

        retain_freed_memory()
    from jaxsep.bench.runner import configure_threads

    configure_threads(args.threads)
    import jax

    from jaxsep.bench.cases import build_case

    case = build_case(args.model, args.size, args.batch_size)
    compiled, run = _compiled(case, args.mode, args.donate)
    for _ in range(3):
        run()
    times = []
    for _ in range(10):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    median_ms = statistics.median(times) * 1e3
    print(
        f"{args.model} {args.mode} {args.size} batch {case.batch_size}: median {median_ms:.1f} ms"
    )

    with tempfile.TemporaryDirectory() as trace_dir:
        with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
            for _ in range(args.calls):
                run()
        path = glob.glob(f"{trace_dir}/**/*.trace.json.gz", recursive=True)[0]
        events = json.load(gzip.open(path))["traceEvents"]
    per_thunk = collections.Counter()
    calls = collections.Counter()
    for event in events:
        if event.get("ph") == "X":
            per_thunk[event["name"]] += event["dur"] / 1e3 / args.calls
            calls[event["name"]] += 1
    names = _op_names(compiled.as_text())
    print("\nslowest XLA thunks (ms per call, executions per call):")
    thunks = [(k, v) for k, v in per_thunk.most_common() if k in names]
    unnamed = [(k, v) for k, v in per_thunk.most_common() if k not in names]
    for name, ms in thunks[: args.top]:
        print(f"{ms:9.2f}  {calls[name] // args.calls:5d}x  {name}")
    per_op = collections.Counter()
    for name, ms in thunks:
        parts = re.sub(r"jit\(\w+\)/", "", names[name]).split("/")
        per_op["/".join(parts[-3:])] += ms
    print("\nper source op (ms per call):")
    for name, ms in per_op.most_common(args.top):
        print(f"{ms:9.2f}  {name}")
    print(f"{sum(per_op.values()):9.2f}  attributed in all")
    print("\nother trace events (ms per call; nested thunks count in their parents too):")
    for name, ms in unnamed[: args.top]:
        print(f"{ms:9.2f}  {calls[name] // args.calls:5d}x  {name}")


if __name__ == "__main__":
    main()

"""The JAX half of a case: a jitted train step (forward, loss, backward, Adam) with the train
state donated on accelerators only (`compile_options.donate_train_state`, the trainer's rule), a
jitted inference call on the weights in their inference layout (as `jaxsep.separate` runs it),
both compiled ahead of time so compile time is reported apart from the step time."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from typing import Any

import jax
import numpy as np

from jaxsep.bench.cases import Case
from jaxsep.bench.harness import Timed
from jaxsep.compile_options import compile_for_inference, donate_train_state
from jaxsep.nn.lstm import inference_layout
from jaxsep.train.state import make_optimizer

LEARNING_RATE = 1e-3


def matmul_precision(precision: str):
    """fp32 = full float32 matmuls/convs (XLA "highest"); tf32 = TensorFloat-32 on GPUs; bf16 =
    "highest" too: only the models' bfloat16 operands are rounded, float32 ones stay exact."""
    return jax.default_matmul_precision("tensorfloat32" if precision == "tf32" else "highest")


def model_dtype(precision: str) -> str:
    """The models' `dtype` for a bench precision: bf16 = bfloat16 activations, else float32."""
    return "bfloat16" if precision == "bf16" else "float32"


def _compiled_bytes(compiled) -> int | None:
    """Device memory of one compiled program: arguments + outputs + temporaries - donated."""
    try:
        m = compiled.memory_analysis()
        return int(
            m.argument_size_in_bytes
            + m.output_size_in_bytes
            + m.temp_size_in_bytes
            - m.alias_size_in_bytes
        )
    except (AttributeError, NotImplementedError, RuntimeError):
        return None


def _xla_cost(compiled) -> dict[str, float] | None:
    """XLA's own count for one compiled program: FLOPs and bytes accessed (its memory traffic,
    after fusion), the inputs of the roofline bound."""
    try:
        cost = compiled.cost_analysis()
    except (AttributeError, NotImplementedError, RuntimeError):
        return None
    cost = cost[0] if isinstance(cost, list) else cost
    if not cost or "flops" not in cost or "bytes accessed" not in cost:
        return None
    return {"flops": float(cost["flops"]), "bytes_accessed": float(cost["bytes accessed"])}


def _device_peak_bytes(device) -> int | None:
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    return None if not stats else int(stats.get("peak_bytes_in_use", 0)) or None


def _compile(fn, args, precision: str, donate: tuple[int, ...] = (), inference_on=None):
    """Compile `fn` for `args`; `inference_on` (a platform name) compiles it with the options
    jaxsep uses for inference there (`compile_options.compile_for_inference`)."""
    jitted = jax.jit(fn, donate_argnums=donate)
    ctx = matmul_precision(precision) if precision else contextlib.nullcontext()
    start = time.perf_counter()
    with ctx:
        if inference_on is None:
            compiled = jitted.lower(*args).compile()
        else:
            compiled = compile_for_inference(jitted, *args, platform=inference_on)
    return compiled, time.perf_counter() - start


@dataclasses.dataclass
class CompiledCase:
    """A case's JAX programs compiled for one device, with the arguments they were built for."""

    infer: Any  # compiled infer(infer_variables, x)
    train: Any  # compiled train_step(ts, x, target, key) -> (ts, loss)
    infer_compile_s: float
    compile_s: float
    donated: bool
    variables: Any
    infer_variables: Any  # `variables` in jaxsep.nn.lstm.inference_layout, as Separator uses
    infer_layout_s: float
    ts: Any
    x: Any
    target: Any
    key: Any


def compile_case(
    case: Case, variant: str, device, precision: str = "fp32", donate: bool | None = None
) -> CompiledCase:
    """Compile `case`'s inference and train step (forward, loss, backward, Adam) in JAX with LSTM
    backend `variant`. `donate=None` donates the train state as jaxsep's trainer would on this
    device (`compile_options.donate_train_state`)."""
    infer, loss = case.jax_program(variant, model_dtype(precision))
    tx = make_optimizer({"name": "adam", "lr": LEARNING_RATE})

    def train_step(ts, x, target, key):
        (value, new_state), grads = jax.value_and_grad(loss, has_aux=True)(
            ts["params"], ts["state"], x, target, key
        )
        updates, opt_state = tx.update(grads, ts["opt_state"], ts["params"])
        params = jax.tree.map(lambda p, u: p + u, ts["params"], updates)
        return {"params": params, "state": new_state, "opt_state": opt_state}, value

    put = lambda tree: jax.device_put(jax.tree.map(np.asarray, tree), device)  # noqa: E731
    variables = put(case.variables)
    x, target, key = put(case.inputs), put(case.target), jax.device_put(jax.random.key(0), device)
    params = variables["params"]
    state = {k: v for k, v in variables.items() if k != "params"}
    ts = {"params": params, "state": state, "opt_state": jax.jit(tx.init)(params)}
    ts = jax.tree.map(lambda a: a.copy(), ts)  # own buffers: the step may donate them

    # inference runs as jaxsep.separate.Separator runs it for users: weights laid out for
    # inference once (the recurrent weights transposed), compiled with jaxsep.compile_options
    start = time.perf_counter()
    infer_variables = jax.block_until_ready(inference_layout(variables))
    layout_s = time.perf_counter() - start
    infer_c, infer_s = _compile(infer, (infer_variables, x), precision, (), device.platform)
    if donate is None:
        donate = donate_train_state(device.platform)
    train_c, train_s = _compile(train_step, (ts, x, target, key), precision, (0,) if donate else ())
    return CompiledCase(
        infer_c,
        train_c,
        infer_s,
        train_s,
        donate,
        variables,
        infer_variables,
        layout_s,
        ts,
        x,
        target,
        key,
    )


def float32_output(case: Case, variant: str, device) -> Any:
    """The case's float32 inference output (the reference of a reduced-precision run)."""
    infer, _ = case.jax_program(variant, "float32")
    variables, x = (
        jax.device_put(jax.tree.map(np.asarray, t), device) for t in (case.variables, case.inputs)
    )
    variables = inference_layout(variables)
    compiled, _ = _compile(infer, (variables, x), "fp32", (), device.platform)
    return jax.tree.map(np.asarray, compiled(variables, x))


def prepare_jax(case: Case, variant: str, device, precision: str = "fp32") -> Timed:
    """Compile `case`'s train step and inference in JAX with LSTM backend `variant`.

    The returned calls' `result` already holds compile seconds, memory, the inference output and
    the first train-step loss (for the parity check, before anything is timed); the timer adds
    the timings, `end("train")` the last loss and `end("infer")` the device's peak memory.
    """
    c = compile_case(case, variant, device, precision)
    result: dict[str, Any] = {
        "variant": variant,
        "infer_compile_s": c.infer_compile_s,
        "infer_layout_s": c.infer_layout_s,
        "compile_s": c.compile_s,
        "donated": c.donated,
        "train_memory_bytes": _compiled_bytes(c.train),
        "infer_memory_bytes": _compiled_bytes(c.infer),
        "train_xla_cost": _xla_cost(c.train),
        "infer_xla_cost": _xla_cost(c.infer),
        "output": jax.tree.map(np.asarray, c.infer(c.infer_variables, c.x)),
    }
    holder = {"ts": c.ts}

    def step():
        holder["ts"], value = c.train(holder["ts"], c.x, c.target, c.key)
        return value

    result["first_loss"] = float(step())

    def end(mode: str) -> None:
        if mode == "train":
            result["last_loss"] = float(step())
        else:
            result["device_peak_bytes"] = _device_peak_bytes(device)

    infer = lambda: c.infer(c.infer_variables, c.x)  # noqa: E731
    return Timed(result, step, infer, jax.block_until_ready, end=end)

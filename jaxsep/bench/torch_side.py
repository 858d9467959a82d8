"""The PyTorch half of a case: eager or `torch.compile`d train step (forward, loss, backward,
Adam) and inference, on the same device and batch as the JAX half."""

from __future__ import annotations

import contextlib
import copy
import functools
import time
import warnings
from typing import Any

import numpy as np
import torch

from jaxsep.bench.cases import Case
from jaxsep.bench.harness import Timed
from jaxsep.bench.jax_side import LEARNING_RATE

CUDNN_BENCHMARK = True  # see set_precision; every record says so (`torch_cudnn_benchmark`)


def set_precision(precision: str) -> None:
    """fp32: no TF32 anywhere (torch's matmul default, not its cuDNN default); tf32: TF32 on.

    Also `cudnn.benchmark`: cuDNN times its algorithms for each new shape and keeps the fastest,
    as PyTorch users of fixed-shape training set it, and as XLA autotunes its GPU kernels for
    the JAX side (the warm-up calls absorb the tuning)."""
    tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cudnn.benchmark = CUDNN_BENCHMARK


def autocast(precision: str, device: torch.device):
    """bf16: `torch.autocast` to bfloat16, PyTorch's own mixed precision (matmuls, convolutions
    and RNNs in bfloat16, the rest float32), as its users run it; otherwise no autocast.

    On a CPU whose oneDNN has no bfloat16 RNN kernels (no AVX-512: "could not create a primitive
    descriptor for the LSTM forward propagation primitive"), with oneDNN off, so that PyTorch
    runs its native kernels, as a user of such a CPU would have to; `torch_kernels` says so."""
    if precision != "bf16":
        return contextlib.nullcontext()
    stack = contextlib.ExitStack()
    if torch_kernels(precision, device) != "default":
        with warnings.catch_warnings():  # the flags' own TF32-on-Intel-GPU remark, irrelevant
            warnings.filterwarnings("ignore", message="TF32 acceleration on top of oneDNN")
            stack.enter_context(torch.backends.mkldnn.flags(enabled=False))
    stack.enter_context(torch.autocast(device.type, dtype=torch.bfloat16))
    return stack


@functools.cache
def _onednn_runs_bf16_rnn() -> bool:
    lstm = torch.nn.LSTM(4, 4)
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            lstm(torch.zeros(2, 1, 4))
    except RuntimeError:
        return False
    return True


def torch_kernels(precision: str, device: torch.device) -> str:
    """Which PyTorch kernels the run uses: "default", or why not (recorded with the run)."""
    if precision == "bf16" and device.type == "cpu" and not _onednn_runs_bf16_rnn():
        return "native: this CPU's oneDNN has no bf16 RNN kernels"
    return "default"


def _to(tree: Any, device: torch.device) -> Any:
    if isinstance(tree, dict):
        return {k: _to(v, device) for k, v in tree.items()}
    return torch.from_numpy(np.array(tree)).to(device)


def _numpy(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: _numpy(v) for k, v in tree.items()}
    return tree.detach().float().cpu().numpy()


def float32_output(case: Case, device: torch.device) -> Any:
    """The case's float32 eager inference output (the reference of a reduced-precision run)."""
    set_precision("fp32")
    module = copy.deepcopy(case.torch_module).to(device).eval()
    x = _to(case.to_torch(case.inputs), device)
    with torch.no_grad():
        return case.from_torch(_numpy(case.torch_infer(module, x)))


def prepare_torch(case: Case, variant: str, device: torch.device, precision: str = "fp32") -> Timed:
    """`case` in PyTorch; `variant` is "eager" or "compile" (torch.compile, default mode).

    Returns its calls like `jax_side.prepare_jax`. The module is a deep copy, so every variant
    starts from the same weights. For "compile", `compile_s` is the time of the first train (and
    inference) call, which triggers compilation; a compiled variant that fails while timed is
    recorded as failed (`fallible`).
    """
    set_precision(precision)
    module = copy.deepcopy(case.torch_module).to(device)
    x, target = _to(case.to_torch(case.inputs), device), _to(case.target, device)
    cuda = device.type == "cuda"

    def sync(value):
        if cuda:
            torch.cuda.synchronize(device)
        return value

    run = torch.compile(module) if variant == "compile" else module
    optimizer = torch.optim.Adam(module.parameters(), lr=LEARNING_RATE)
    result: dict[str, Any] = {"variant": variant, "kernels": torch_kernels(precision, device)}

    mixed = lambda: autocast(precision, device)  # noqa: E731

    with torch.no_grad(), mixed():
        module.eval()
        start = time.perf_counter()
        result["output"] = case.from_torch(_numpy(sync(case.torch_infer(run, x))))
        result["infer_compile_s"] = time.perf_counter() - start if variant == "compile" else None

    def step():
        optimizer.zero_grad(set_to_none=True)
        with mixed():
            loss = case.torch_loss(run, x, target)
        loss.backward()
        optimizer.step()
        return loss

    def infer():
        with torch.no_grad(), mixed():
            return case.torch_infer(run, x)

    def begin(mode: str) -> None:
        # the interleaved timer runs each mode apart, so the module's mode is set once per mode
        module.train(mode == "train")
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)

    def end(mode: str) -> None:
        if mode == "train":
            result["last_loss"] = float(step().item())
        result[f"{mode}_memory_bytes"] = (
            int(torch.cuda.max_memory_allocated(device)) if cuda else None
        )

    begin("train")
    start = time.perf_counter()
    result["first_loss"] = float(sync(step()).item())
    result["compile_s"] = time.perf_counter() - start if variant == "compile" else None
    return Timed(result, step, infer, sync, begin, end, fallible=variant != "eager")

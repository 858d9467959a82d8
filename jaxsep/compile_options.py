"""Per-executable XLA choices (compiler options, buffer donation), each chosen by measurement.

Inference on CPU: which operations XLA:CPU hands to the YNNPACK library ("YNN fusions") is
picked per program. A program without convolutions (X-UMX, UMX, ChimeraNet: dense layers and
LSTMs) gets LIBRARY_FUSION_TYPE_DOT: dots fused with their elementwise neighbours, which YNNPACK
spreads over the thread pool. With XLA's own kernels instead (YNN off) the LSTM models' inference
did not get faster with a second thread: X-UMX 100 -> 61-70 ms, ChimeraNet 148-169 -> 103-111 ms,
UMX 34-49 -> 26-30 ms with it, two threads, batch as in `jaxsep bench --size cpu` (one pinned
thread: X-UMX 114 -> 110, ChimeraNet 196 -> 189, UMX unchanged). A program with convolutions
(VGGish, the VQ-VAE) gets LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT, one library call per dot: DOT (and
XLA's default) fold VGGish's whole conv + dense network into one YNN call that runs 8x slower
(0.40 s vs 0.05 s, two threads), while INDIVIDUAL_DOT matches XLA's kernels (VGGish 50 vs 48 ms,
VQ-VAE 63 vs 65 ms). Training keeps XLA's defaults: the VGGish step is 1.9x faster with them,
and DOT fusion slows the LSTM models' steps too (in-process A/B, `--size cpu`: ChimeraNet one
thread 569 vs 586 ms, two threads 319 vs 345, batch 8 983 vs 1056; X-UMX two threads 215 vs 219).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import numpy as np

_YNN_FUSION = "xla_cpu_experimental_ynn_fusion_type"
CPU_DOT_FUSION = {_YNN_FUSION: "LIBRARY_FUSION_TYPE_DOT"}
CPU_SINGLE_DOTS = {_YNN_FUSION: "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}
_CONVOLUTION = "stablehlo.convolution"


@functools.cache
def _known_to_xla(option: str, value: str) -> bool:
    """Whether this XLA accepts `option=value` (an unknown one fails at compile time)."""
    try:
        probe = jax.jit(lambda x: x + 1, compiler_options={option: value})
        probe(jax.device_put(np.zeros(1, np.float32), jax.devices("cpu")[0]))
    except Exception:  # noqa: BLE001 - any failure means: compile with XLA's defaults
        return False
    return True


def inference_compiler_options(platform: str, program_text: str = "") -> dict[str, str]:
    """Options for an inference executable on `platform` ("cpu", "gpu", "tpu").

    `program_text`: the lowered program (`jax.stages.Lowered.as_text()`), whose convolutions
    decide the CPU choice (see the module docstring). Empty when the installed XLA does not
    know the option.
    """
    if platform != "cpu":
        return {}
    options = CPU_SINGLE_DOTS if _CONVOLUTION in program_text else CPU_DOT_FUSION
    return dict(options) if all(_known_to_xla(k, v) for k, v in options.items()) else {}


def compile_for_inference(jitted: Any, *args: Any, platform: str) -> Any:
    """Lower `jitted` (a `jax.jit` function) for `args` and compile it with the inference
    options that its own program calls for; returns the `jax.stages.Compiled` executable."""
    lowered = jitted.lower(*args)
    return lowered.compile(inference_compiler_options(platform, lowered.as_text()))


def donate_train_state(platform: str) -> bool:
    """Whether a training step should donate its train-state buffers on `platform`.

    On accelerators, yes: donation lets the step update parameters and optimizer state in place,
    halving their device memory. On XLA:CPU, no: with the state donated, copy insertion copies
    every parameter at the start of the step (the backward pass reads weights that the fused
    Adam update writes in place): the X-UMX train step took 423 ms donated vs 346 ms not, and
    ChimeraNet 619 vs 556 ms (batch 2 x 1 s, one thread; `tools/profile_step.py xumx train
    --donate` shows the parameter `copy` thunks). Host memory is rarely the limit there. VGGish
    once looked faster donated (0.66 vs 0.78 s), but only because donation shrank the block of
    temporaries that glibc page-faulted in every step; with `jaxsep.host_memory` keeping that
    block, donated and not are equal (0.44 vs 0.43 s).
    """
    return platform != "cpu"

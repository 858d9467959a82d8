"""Per-executable XLA choices (compiler options, buffer donation), each chosen by measurement.

Inference on CPU: XLA:CPU's YNN fusion folds a whole conv + dense network into one custom call.
For forward-only VGGish (batch 4) that call runs 8x slower than XLA's own kernels (0.695 s vs
0.087 s, `jaxsep bench vggish --threads 1`, idle 2-core machine), while the training step is
1.9x faster WITH it and X-UMX, UMX, ChimeraNet and the VQ-VAE are unchanged either way
(benchmarks/README.md). So only inference executables on CPU switch it off; a global XLA_FLAGS
setting would slow training down.
"""

from __future__ import annotations

import functools

import jax
import numpy as np

_CPU_INFERENCE = {"xla_cpu_experimental_ynn_fusion_type": ""}


@functools.cache
def inference_compiler_options(platform: str) -> dict[str, str]:
    """Options for an inference executable on `platform` ("cpu", "gpu", "tpu"); empty when the
    installed XLA does not know them (an unknown option fails at compile time)."""
    if platform != "cpu":
        return {}
    try:
        probe = jax.jit(lambda x: x + 1, compiler_options=_CPU_INFERENCE)
        probe(jax.device_put(np.zeros(1, np.float32), jax.devices("cpu")[0]))
    except Exception:  # noqa: BLE001 - any failure means: compile with XLA's defaults
        return {}
    return dict(_CPU_INFERENCE)


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

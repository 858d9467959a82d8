"""Copy Flax variables into a `torch_models` twin, so both frameworks compute the same function.

The twins name their submodules after the Flax paths, so the mapping is generic: a Flax leaf
``a/b/kernel`` becomes ``a.b.weight`` (transposed to the torch layout of module ``a.b``), every
other leaf keeps its name. Every torch parameter and persistent buffer must be covered (BatchNorm's
``num_batches_tracked`` excepted, which has no JAX counterpart): a missing or extra name is a bug
in the twin, so it raises instead of benchmarking two different networks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from jaxsep.errors import JaxsepError


def _flat(tree: Mapping, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out.update(_flat(value, (*prefix, str(key))))
        else:
            out[(*prefix, str(key))] = value
    return out


def _torch_kernel(module: nn.Module, kernel: np.ndarray) -> np.ndarray:
    """Flax kernel -> torch weight layout of `module`."""
    if isinstance(module, nn.Linear):  # [in, out] -> [out, in]
        return kernel.T
    if isinstance(module, nn.Conv1d | nn.ConvTranspose1d):
        # Conv [k, in, out] -> [out, in, k]; ConvTranspose (transpose_kernel) [k, out, in] ->
        # torch's [in, out, k]: the same axis reversal.
        return kernel.transpose(2, 1, 0)
    if isinstance(module, nn.Conv2d):  # HWIO -> OIHW
        return kernel.transpose(3, 2, 0, 1)
    raise JaxsepError(f"bench: no kernel layout rule for {type(module).__name__}")


def torch_state_from_jax(
    module: nn.Module, variables: Mapping, collections: tuple[str, ...] = ("params", "batch_stats")
) -> dict[str, torch.Tensor]:
    """State dict for `module` built from the Flax `variables` (see the module docstring)."""
    state = {}
    for collection in collections:
        for path, value in _flat(variables.get(collection, {})).items():
            value = np.array(value, dtype=np.float32)
            if path[-1] == "kernel":
                owner = module.get_submodule(".".join(path[:-1]))
                value = _torch_kernel(owner, value)
                path = (*path[:-1], "weight")
            state[".".join(path)] = torch.from_numpy(np.ascontiguousarray(value))
    return state


def load_jax_variables(module: nn.Module, variables: Mapping, skip: tuple[str, ...] = ()) -> None:
    """Load `variables` into `module` in place; `skip`: torch names set by other means."""
    state = torch_state_from_jax(module, variables)
    expected = {
        name
        for name in module.state_dict()
        if not name.endswith("num_batches_tracked") and not name.startswith(skip)
    }
    missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or extra:
        raise JaxsepError(
            f"bench: torch twin and JAX params differ: missing {missing[:5]}, extra {extra[:5]}"
        )
    for name, tensor in module.state_dict().items():
        if name not in state:
            state[name] = tensor
        elif tuple(state[name].shape) != tuple(tensor.shape):
            raise JaxsepError(
                f"bench: {name} has shape {tuple(state[name].shape)} in JAX, "
                f"{tuple(tensor.shape)} in torch"
            )
    module.load_state_dict(state, strict=True)

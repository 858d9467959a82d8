"""Device mesh and shardings for data parallelism, and optional multi-host start-up.

Parameters are replicated and the batch is split on one `data` axis; XLA inserts the gradient
all-reduce. `maybe_initialize_distributed` must run before anything touches `jax.devices()`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxsep.errors import JaxsepError, first_line

DATA_AXIS = "data"


def maybe_initialize_distributed(flag: bool = False) -> bool:
    """Call `jax.distributed.initialize()` when `flag` or env `JAXSEP_DISTRIBUTED=1`.

    `JAXSEP_COORDINATOR`, `JAXSEP_NUM_PROCESSES` and `JAXSEP_PROCESS_ID` are passed when set
    (plain GPU hosts); otherwise JAX auto-detects the cluster (Slurm, Kubernetes, Cloud TPU).
    Returns whether it initialised.
    """
    if not (flag or os.environ.get("JAXSEP_DISTRIBUTED", "") == "1"):
        return False
    kwargs = {}
    if "JAXSEP_COORDINATOR" in os.environ:
        kwargs["coordinator_address"] = os.environ["JAXSEP_COORDINATOR"]
    for env, key, low in (
        ("JAXSEP_NUM_PROCESSES", "num_processes", 1),
        ("JAXSEP_PROCESS_ID", "process_id", 0),
    ):
        if env in os.environ:
            text = os.environ[env]
            if not text.strip().isdigit() or int(text) < low:
                raise JaxsepError(f"{env} must be an integer >= {low}, got {text!r}")
            kwargs[key] = int(text)
    # CPU devices of several processes need a collectives backend (GPU/TPU ignore this setting).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(**kwargs)
    except (ValueError, RuntimeError) as e:  # no cluster found, bad address, ...
        raise JaxsepError(
            f"--distributed: jax.distributed.initialize() failed ({first_line(e)}); outside "
            "Slurm/Kubernetes/Cloud TPU set JAXSEP_COORDINATOR=host:port, JAXSEP_NUM_PROCESSES "
            "and JAXSEP_PROCESS_ID"
        ) from e
    return True


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D `("data",)` mesh over `devices` (default: all devices of all processes).

    Auto axis type: XLA propagates shardings, so model code needs no sharding annotations
    (explicit axes would make some reshapes of the sharded batch axis an error).
    """
    devices = list(devices) if devices is not None else jax.devices()
    return jax.make_mesh(
        (len(devices),), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,), devices=devices
    )


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array (parameters, optimizer state, scalars)."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over `data`."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))

"""Keep freed host memory in the process instead of returning it to the kernel after every step.

XLA:CPU allocates all temporaries of one execution as a single block (274 MB for the VQ-VAE
level-0 train step at batch 1 x 16384, 360 MB for VGGish at batch 4) and frees it when the call
ends. glibc serves such a block from a worker thread with a fresh ``mmap`` (its per-thread arenas
cannot hold blocks over 64 MB) and unmaps it on ``free``, so every step page-faults the whole block
back in: 67,000 minor faults per VQ-VAE step, 0.53 s -> 0.42 s once they are gone (one thread,
`jaxsep bench vqvae --threads 1`). PyTorch does not pay this: its per-op buffers are small enough
for glibc to recycle.

`retain_freed_memory` makes glibc serve every block from one heap (one arena, no ``mmap``) and
keep up to 2 GiB of freed memory at its top: the block of the previous step is reused as it is.
It must run before JAX starts its threads. The `jaxsep` command line calls it at start-up
(``jaxsep --host-malloc system ...`` leaves glibc's defaults); library users call it themselves.
"""

from __future__ import annotations

import ctypes
import sys

# mallopt parameters (glibc <malloc.h>)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8

RETAIN_SETTINGS = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 2**31 - 1))

_retaining = False


def retaining() -> bool:
    """Whether `retain_freed_memory` succeeded in this process (benchmark records report it)."""
    return _retaining


def _jax_started() -> bool:
    """Whether JAX's backends (and so XLA's threads, each bound to its own glibc arena) exist."""
    if "jax" not in sys.modules:
        return False
    from jax._src import xla_bridge

    return xla_bridge.backends_are_initialized()


def retain_freed_memory() -> bool:
    """Apply `RETAIN_SETTINGS` with glibc's ``mallopt``; False (and nothing changed) on a system
    without glibc (macOS, musl) or once JAX has started (its threads keep their arenas), True when
    every setting was accepted."""
    if not sys.platform.startswith("linux") or _jax_started():
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    global _retaining
    # a list, not a generator: every setting is applied even if an earlier one is refused
    _retaining = all([mallopt(param, value) == 1 for param, value in RETAIN_SETTINGS])
    return _retaining

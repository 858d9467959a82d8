"""`jaxsep.host_memory`: freed host memory is reused instead of page-faulted back in."""

from __future__ import annotations

import subprocess
import sys

import pytest

# In a worker thread (as XLA:CPU does), mallocs, touches and frees a 256 MB block twice; prints
# the minor page faults of the second round, the pattern of an executable's temporaries per call.
_PROBE = """
import ctypes, resource, sys, threading
if sys.argv[1] == "retain":
    from jaxsep.host_memory import retain_freed_memory
    assert retain_freed_memory()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
libc.memset.argtypes = (ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t)
n = 256 * 2**20
faults = []

def step():
    block = libc.malloc(n)
    libc.memset(block, 1, n)
    libc.free(block)

def worker():
    step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    step()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)

thread = threading.Thread(target=worker)
thread.start()
thread.join()
print(faults[0])
"""


def _second_allocation_faults(mode: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, mode], check=True, capture_output=True, text=True
    )
    return int(out.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt is Linux-only")
def test_retained_block_is_reused_without_page_faults():
    pages = 256 * 2**20 // 4096
    assert _second_allocation_faults("system") > pages // 2  # glibc maps it afresh
    assert _second_allocation_faults("retain") < pages // 100


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt is Linux-only")
def test_retain_refuses_once_jax_has_started():
    probe = (
        "import jax; jax.devices()\n"
        "from jaxsep import host_memory\n"
        "print(host_memory.retain_freed_memory(), host_memory.retaining())"
    )
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True)
    assert out.stdout.split() == ["False", "False"]


def test_cli_rejects_unknown_host_malloc_mode(capsys):
    from jaxsep.cli import main

    with pytest.raises(SystemExit) as e:
        main(["--host-malloc", "tcmalloc", "demo"])
    assert e.value.code == 2
    assert "--host-malloc" in capsys.readouterr().err

"""Persistent compilation cache: each XLA program compiled once per machine, not once per process.

A resumed `jaxsep train`, or `jaxsep separate` run once per file from a shell loop, would
otherwise compile the same programs again in every process (an X-UMX train step: 5-8 s on a
2-core CPU; more on a GPU, where XLA also autotunes its kernels). JAX's own cache
(`jax_compilation_cache_dir`) does the work, keyed on the program, the compile options, the
devices and the jaxlib version; this module only picks the directory and caps its size.

The command line turns it on for every command but `bench` (whose `compile_s` must time a real
compile): `--compile-cache DIR`, else `$JAXSEP_COMPILE_CACHE`, else `~/.cache/jaxsep/xla`
(`$XDG_CACHE_HOME` honoured); `off` disables it. JAX writes an entry only for a program that took
at least `jax_persistent_cache_min_compile_time_secs` (default 1 s) to compile.
"""

from __future__ import annotations

import hashlib
import os
import platform
from pathlib import Path

from jaxsep.errors import JaxsepError
from jaxsep.host_cpu import read_cpuinfo

ENV_VAR = "JAXSEP_COMPILE_CACHE"
OFF = "off"
# How JAX's cache (jax/_src/lru_cache.py) names an entry's program and its last-use stamp, and
# the file it locks; tests/test_compile_cache.py checks them against the installed JAX.
ENTRY_SUFFIX, STAMP_SUFFIX, LOCK_FILE = "-cache", "-atime", ".lockfile"
# Least recently used entries are evicted past this size. Setting a size also makes JAX take a
# file lock around each read and write, so a process never reads an entry another is writing.
MAX_BYTES = 4 << 30


def default_cache_root() -> Path:
    """`$XDG_CACHE_HOME/jaxsep/xla`, or `~/.cache/jaxsep/xla`."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "jaxsep" / "xla"


def resolve_cache_root(setting: str | None) -> Path | None:
    """The cache root from a `--compile-cache` value (None: `$JAXSEP_COMPILE_CACHE`, else the
    default); None when the setting is `off`."""
    if setting is None:
        setting = os.environ.get(ENV_VAR) or str(default_cache_root())
    if setting.strip().lower() == OFF:
        return None
    return Path(setting).expanduser()


def host_tag() -> str:
    """Name of this host's CPU instruction set, one cache subdirectory per set.

    XLA:CPU compiles for the features of the CPU it runs on, and an executable built on another
    CPU model fails to load there (XLA: "Machine type used for XLA:CPU compilation doesn't match
    the machine type for execution"; JAX warns and recompiles, but never replaces the entry).
    Keeping entries per feature set lets one cache on a shared home directory serve mixed hosts.
    """
    flags = " ".join(sorted(read_cpuinfo()[1])) or platform.processor()
    return f"{platform.machine() or 'cpu'}-{hashlib.sha256(flags.encode()).hexdigest()[:12]}"


def enable_compile_cache(root: str | os.PathLike, max_bytes: int = MAX_BYTES) -> Path:
    """Point JAX's persistent compilation cache at `root/<host_tag()>` (created); returns it.

    Call before the process compiles anything: JAX decides once, at its first compile, whether
    a cache is in use.
    """
    import jax

    path = Path(root) / host_tag()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise JaxsepError(
            f"{root}: cannot use as the compile cache ({reason}); "
            f"pass --compile-cache {OFF} or another directory"
        ) from None
    if not os.access(path, os.W_OK):
        raise JaxsepError(
            f"{path}: compile cache is not writable; pass --compile-cache {OFF} or another directory"
        )
    remove_interrupted_writes(path)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_compilation_cache_max_size", int(max_bytes))
    return path


def remove_interrupted_writes(path: Path) -> list[Path]:
    """Delete the entries a killed process left half-written in the cache folder `path`.

    JAX writes an entry's program (`KEY-cache`), then its last-use stamp (`KEY-atime`), under
    the folder's file lock; a program without its stamp was cut off. Left there, JAX would warn
    on every later run that it cannot read it, never replace it, and fail every later write
    (its size-cap scan reads each entry's stamp): the cache would be dead from then on, and a
    killed run is exactly the one that gets resumed. The scan holds the same lock, so a write in
    progress in another process is never taken for an interrupted one.
    """
    import filelock

    removed = []
    try:
        with filelock.FileLock(path / LOCK_FILE, timeout=10):
            for entry in path.glob(f"*{ENTRY_SUFFIX}"):
                stamp = entry.with_name(entry.name.removesuffix(ENTRY_SUFFIX) + STAMP_SUFFIX)
                if not stamp.exists():
                    entry.unlink(missing_ok=True)
                    removed.append(entry)
    except filelock.Timeout:  # another process holds the cache for long: leave it to a later run
        pass
    return removed

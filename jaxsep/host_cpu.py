"""What CPU this host has, from /proc/cpuinfo: read in one place for the compile cache (which
keeps XLA:CPU programs per instruction set) and the benchmarks (which name the CPU they ran on).
"""

from __future__ import annotations

from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")


def cpuinfo_fields(cpuinfo: str) -> tuple[str | None, list[str]]:
    """``(model name, feature flags)`` of the first CPU listed in /proc/cpuinfo's text (x86:
    "flags", arm64: "Features"); None and [] where a field is missing."""
    model, flags = None, None
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if model is None and key == "model name":
            model = value.strip()
        elif flags is None and key in ("flags", "Features"):
            flags = value.split()
    return model, flags or []


def read_cpuinfo() -> tuple[str | None, list[str]]:
    """:func:`cpuinfo_fields` of this host (None and [] where /proc/cpuinfo cannot be read)."""
    try:
        return cpuinfo_fields(CPUINFO.read_text())
    except OSError:
        return None, []

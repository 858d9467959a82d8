"""Test setup: 8 host CPU devices before jax is imported, shared fixtures paths, a loader for
the scripts under tools/."""

import importlib.util
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("JAXSEP_FIXTURES", REPO.parent / "shared" / "fixtures"))


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """`../shared/fixtures`: golden outputs of the original PyTorch implementations."""
    assert FIXTURES.is_dir(), f"golden fixtures not found at {FIXTURES} (set JAXSEP_FIXTURES)"
    return FIXTURES


@pytest.fixture(scope="session")
def load_tool():
    """`load_tool(name)`: the module `tools/<name>.py` (the scripts are not a package)."""

    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load

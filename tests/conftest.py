"""Test setup: 8 host CPU devices before jax is imported, shared fixtures paths."""

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

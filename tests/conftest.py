"""Test setup: 8 host CPU devices before jax is imported, shared fixtures paths, a loader and a
runner for the scripts under tools/."""

import importlib.util
import json
import os
import subprocess
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# on a GPU (the GPU session), the bench tests run JAX and PyTorch on one device: as the bench
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
# the command line's persistent compilation cache stays out of the user's home during tests
# (tests/test_compile_cache.py points it at temporary directories)
os.environ.setdefault("JAXSEP_COMPILE_CACHE", "off")

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


@pytest.fixture
def run_record_tool(tmp_path):
    """`run_record_tool(name, *args)`: run `tools/<name>.py args -o FILE` in a fresh process, on
    one CPU device as a user runs it (not the tests' 8), and return the one JSON record it
    appended to FILE (checked equal to the one it printed)."""

    def run(name: str, *args: str) -> dict:
        out = tmp_path / "records" / f"{name}.jsonl"
        command = [sys.executable, str(REPO / "tools" / f"{name}.py"), *args, "-o", str(out)]
        env = {key: value for key, value in os.environ.items() if key != "XLA_FLAGS"}
        result = subprocess.run(
            command, capture_output=True, text=True, check=False, cwd=REPO, env=env
        )
        assert result.returncode == 0, result.stderr
        (record,) = [json.loads(line) for line in out.read_text().splitlines()]
        assert record == json.loads(result.stdout.strip().splitlines()[-1])
        return record

    return run

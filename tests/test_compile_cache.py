"""The command line's persistent compilation cache (jaxsep/compile_cache.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from jaxsep.compile_cache import (
    ENTRY_SUFFIX,
    ENV_VAR,
    LOCK_FILE,
    STAMP_SUFFIX,
    host_tag,
    resolve_cache_root,
)
from jaxsep.convert import convert_to_model_dir

REPO = Path(__file__).resolve().parents[1]

# `jaxsep.cli.main` in a fresh process, counting JAX's persistent-cache hits (jax.monitoring).
RUN_CLI = """
import json, sys
import jax
hits = []
jax.monitoring.register_event_listener(
    lambda event, **_: hits.append(event) if event == "/jax/compilation_cache/cache_hits" else None
)
from jaxsep.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "hits": len(hits)}))
"""


def run_cli(*args: str, home: Path) -> tuple[dict, subprocess.CompletedProcess]:
    """`jaxsep ARGS` as a user runs it (one device, no cache setting in the environment), with
    `home` as its XDG cache home (where the default cache would go)."""
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", ENV_VAR)}
    env["XDG_CACHE_HOME"] = str(home)
    # cache the tiny test programs too (JAX's default skips compiles under 1 s)
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    result = subprocess.run(
        [sys.executable, "-c", RUN_CLI, *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
        env=env,
    )
    return json.loads(result.stdout.strip().splitlines()[-1]), result


def test_cache_root_from_flag_then_environment_then_default(monkeypatch, tmp_path):
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve_cache_root(None) == tmp_path / "xdg" / "jaxsep" / "xla"
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "env"))
    assert resolve_cache_root(None) == tmp_path / "env"
    assert resolve_cache_root(str(tmp_path / "flag")) == tmp_path / "flag"
    assert resolve_cache_root("off") is None
    monkeypatch.setenv(ENV_VAR, "OFF")
    assert resolve_cache_root(None) is None


@pytest.fixture(scope="module")
def xumx_tiny_and_track(fixtures_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("cache_case")
    model = convert_to_model_dir(
        "xumx", fixtures_dir / "xumx" / "xumx_tiny_package.pth", root / "m"
    )
    rng = np.random.default_rng(0)
    track = root / "song.wav"
    sf.write(track, (0.1 * rng.standard_normal((3 * 44100, 2))).astype(np.float32), 44100)
    return model, track


def test_second_separate_loads_its_programs_from_the_cache_and_writes_the_same_stems(
    xumx_tiny_and_track, tmp_path
):
    model, track = xumx_tiny_and_track
    home = tmp_path / "home"
    cache = home / "jaxsep" / "xla"  # the default location
    outputs = []
    for run in range(2):
        out = tmp_path / f"run{run}"
        args = ("separate", str(track), "--model", str(model), "-o", str(out))
        if run == 1:  # the same directory, named
            args = ("--compile-cache", str(cache), *args)
        summary, result = run_cli(*args, home=home)
        assert summary["code"] == 0, result.stderr
        outputs.append(out)
        if run == 0:
            assert summary["hits"] == 0
            assert list((cache / host_tag()).glob("*" + ENTRY_SUFFIX)), (
                "the first run wrote no entries"
            )
        else:
            assert summary["hits"] >= 1
            assert not result.stderr.strip(), result.stderr  # no cache warnings
    stems = sorted(p.relative_to(outputs[0]) for p in outputs[0].rglob("*.wav"))
    assert len(stems) == 4
    for stem in stems:  # the executable loaded from disk computes exactly what the compiled one did
        np.testing.assert_array_equal(sf.read(outputs[0] / stem)[0], sf.read(outputs[1] / stem)[0])


def test_cache_off_compiles_without_it(xumx_tiny_and_track, tmp_path):
    model, track = xumx_tiny_and_track
    home = tmp_path / "home"
    args = ("separate", str(track), "--model", str(model), "-o", str(tmp_path / "out"))
    summary, result = run_cli("--compile-cache", "off", *args, home=home)
    assert summary == {"code": 0, "hits": 0}, result.stderr
    assert not home.exists()


def test_bench_never_turns_the_cache_on(monkeypatch, tmp_path):
    import jax

    import jaxsep.bench.runner
    import jaxsep.bench.table
    from jaxsep.cli import main

    calls = []
    monkeypatch.setattr(jaxsep.bench.runner, "run_bench", lambda *a, **k: calls.append(a) or [])
    monkeypatch.setattr(jaxsep.bench.table, "render_table", lambda records: "")
    cache = tmp_path / "cache"
    try:
        assert main(["--compile-cache", str(cache), "bench", "vggish", "--size", "tiny"]) == 0
        assert calls == [("vggish",)]
        assert jax.config.jax_compilation_cache_dir is None  # its compile_s times real compiles
        assert not cache.exists()
    finally:
        jax.config.update("jax_compilation_cache_dir", None)


def test_unusable_cache_directory_is_a_one_line_error(xumx_tiny_and_track, tmp_path):
    model, track = xumx_tiny_and_track
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    args = ("separate", str(track), "--model", str(model), "-o", str(tmp_path / "out"))
    summary, result = run_cli("--compile-cache", str(blocker), *args, home=tmp_path)
    assert summary["code"] == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("jaxsep separate: error: ") and str(blocker) in line
    assert "--compile-cache off" in line


def test_training_from_cached_programs_follows_the_same_losses(tmp_path):
    """Cold cache, warm cache, then warm again after a run killed while writing its train step
    (program cut short, no last-use stamp): that entry is dropped and written anew, no warning."""
    from jaxsep.data.synth import synthesize_corpus

    corpus = tmp_path / "pop"
    synthesize_corpus(corpus, songs=3, seconds=2.0, domain="pop", seed=3, test_fraction=0.34)
    cache = tmp_path / "cache"
    losses = []
    for run in range(3):
        if run == 2:
            (program,) = (cache / host_tag()).glob("jit_step-*" + ENTRY_SUFFIX)
            program.write_bytes(program.read_bytes()[: program.stat().st_size // 2])
            stamp = program.with_name(program.name.replace(ENTRY_SUFFIX, STAMP_SUFFIX))
            stamp.unlink()
        workdir = tmp_path / f"run{run}"
        args = ("--compile-cache", str(cache), "train", "--config", "configs/mask_demo.py:tiny")
        args += ("--workdir", str(workdir), "--data", str(corpus))
        summary, result = run_cli(*args, "--config.data.setup_file=synth.yaml", home=tmp_path)
        assert summary["code"] == 0, result.stderr
        assert (summary["hits"] >= 1) == (run >= 1)
        assert "cache" not in result.stderr, result.stderr  # JAX warns of unreadable entries
        records = (workdir / "metrics.jsonl").read_text().splitlines()
        losses.append([(r["split"], r["step"], r["loss"]) for r in map(json.loads, records)])
    assert len(losses[0]) >= 4 and losses[2] == losses[1] == losses[0]
    assert stamp.exists() and program.stat().st_size > 0  # the step was compiled and written anew


def test_cache_file_names_are_the_installed_jax_ones(tmp_path):
    from jax._src import lru_cache  # what remove_interrupted_writes relies on

    assert (lru_cache._CACHE_SUFFIX, lru_cache._ATIME_SUFFIX) == (ENTRY_SUFFIX, STAMP_SUFFIX)
    assert lru_cache.LRUCache(str(tmp_path), max_size=1 << 20).lock_path.name == LOCK_FILE


def test_compile_cache_tool_times_all_three_ways_and_records_the_cache_size(run_record_tool):
    record = run_record_tool(
        "bench_compile_cache", "--repeats", "1", "--config", "configs/xumx.py:tiny"
    )
    for command in ("train", "sep"):
        for way in ("off", "cold", "warm"):
            assert record[f"{command}_{way}_s"] > 0
        ratio = record[f"{command}_warm_s"] / record[f"{command}_off_s"]
        assert record[f"{command}_warm_over_off"] == pytest.approx(ratio, abs=0.01)
    assert record["cache_programs"] >= 2 and record["cache_mb"] > 0
    assert "configs/xumx.py:tiny" in record["what"]

"""Every `jaxsep` entry point: -h works, bad input exits 2 with one line and writes nothing."""

import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from jaxsep.cli import main

ROOT = Path(__file__).resolve().parents[1]

COMMANDS = ("synth", "train", "separate", "evaluate", "convert", "bench", "demo")


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err, "expected an error message on stderr"
    assert "\n" not in err, f"error message is not one line:\n{err}"
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize("command", COMMANDS)
def test_help_exits_zero(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "-h"])
    assert info.value.code == 0
    assert command in capsys.readouterr().out


def test_console_script_runs():
    result = subprocess.run(
        [sys.executable, "-m", "jaxsep.cli", "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0
    assert "synth" in result.stdout and "demo" in result.stdout


@pytest.mark.parametrize(
    "argv",
    [
        ["frobnicate"],
        ["synth"],
        ["synth", "out", "--songs", "many"],
        ["synth", "out", "--domain", "jazz"],
        ["train", "--workdir", "w"],
        ["separate", "a.wav", "--model", "m", "--bogus"],
        ["convert", "pytorch", "a", "b"],
        ["bench", "nothing"],
    ],
)
def test_usage_errors_exit_two_with_one_line(argv, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    _one_line_error(capsys)
    assert list(tmp_path.iterdir()) == []


def test_train_rejects_missing_config_and_stray_args(capsys, tmp_path):
    assert (
        main(["train", "--config", str(tmp_path / "no.py"), "--workdir", str(tmp_path / "w")]) == 2
    )
    assert "config file not found" in _one_line_error(capsys)
    assert main(["train", "--config", "x.py", "--workdir", "w", "--lr=3"]) == 2
    assert "unrecognized arguments: --lr=3" in _one_line_error(capsys)
    assert not (tmp_path / "w").exists()


def test_train_names_a_missing_or_unknown_recipe(capsys, tmp_path):
    for name, body, words in [
        ("none.py", "ml_collections.ConfigDict({'seed': 0})", "config has no 'recipe' field"),
        ("typo.py", "ml_collections.ConfigDict({'recipe': 'xumx_vgish'})", "unknown recipe"),
    ]:
        config = tmp_path / name
        config.write_text(
            f"import ml_collections\n\ndef get_config(arg=None):\n    return {body}\n"
        )
        assert main(["train", "--config", str(config), "--workdir", str(tmp_path / "w")]) == 2
        assert words in _one_line_error(capsys)
    assert not (tmp_path / "w").exists() or not any((tmp_path / "w").rglob("*"))


def test_synth_unknown_soundfont_writes_nothing(capsys, tmp_path):
    out = tmp_path / "corpus"
    assert main(["synth", str(out), "--songs", "1", "--soundfonts", "nope.sf2"]) == 2
    assert "nope.sf2" in _one_line_error(capsys)
    assert list(tmp_path.iterdir()) == []


def test_damaged_checkpoint_is_one_short_line_on_a_real_command_line(tmp_path):
    """tensorstore's JSON spec is cut from the message, and orbax's late reports of reads
    landing on its closed event loop (tracebacks after the error, some runs) are dropped."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import soundfile

    from jaxsep.modeldir import save_model_dir
    from jaxsep.models.mask_mlp import MaskMLP

    kwargs = {"num_sources": 2, "n_fft": 256, "hop": 64, "hidden": 16, "num_channels": 2}
    params = MaskMLP(**kwargs).init(jax.random.key(0), jnp.zeros((1, 1024, 2)))["params"]
    config = {"model": "mask_mlp", "model_kwargs": kwargs, "sources": ["a", "b"]}
    model = save_model_dir(
        tmp_path / "model", {**config, "sample_rate": 8000, "channels": 2}, {"params": params}
    )
    for data_file in (model / "variables").rglob("*"):
        if data_file.is_file() and data_file.parent.name == "d":
            data_file.write_bytes(b"garbage")
    song = tmp_path / "song.wav"
    soundfile.write(song, np.zeros((800, 2), np.float32), 8000)
    command = [sys.executable, "-m", "jaxsep.cli", "separate", str(song), "--model", str(model)]
    for _ in range(2):  # the late reports come in some runs only
        result = subprocess.run(
            command + ["-o", str(tmp_path / "out")], capture_output=True, text=True, check=False
        )
        assert result.returncode == 2
        assert result.stderr.count("\n") == 1, result.stderr
        assert "corrupt or unreadable checkpoint" in result.stderr
        assert "tensorstore_spec" not in result.stderr and len(result.stderr) < 600


def test_only_closed_event_loop_reports_are_dropped(monkeypatch):
    from jaxsep import cli

    seen = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)
    cli._drop_closed_event_loop_reports()
    cli._drop_closed_event_loop_reports()  # idempotent: one wrapper, not two
    hook = sys.unraisablehook
    closed = types.SimpleNamespace(exc_value=RuntimeError("Event loop is closed"))
    other = types.SimpleNamespace(exc_value=RuntimeError("boom"))
    hook(closed)
    hook(other)
    assert seen == [other]


def test_distributed_without_a_cluster_is_one_line(tmp_path):
    """`--distributed` where jax.distributed finds no cluster, or with a malformed JAXSEP_*
    variable, stops in one line before any data is read."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "JAXSEP_", "OMPI_"))}
    env["JAXSEP_COMPILE_CACHE"] = "off"  # not the user's home (conftest)
    command = [sys.executable, "-m", "jaxsep.cli", "train", "--config", "configs/mask_demo.py:tiny"]
    command += ["--workdir", str(tmp_path / "w"), "--data", str(tmp_path / "none"), "--distributed"]
    for extra, expected in [
        ({}, "--distributed: jax.distributed.initialize() failed ("),
        (
            {"JAXSEP_NUM_PROCESSES": "two"},
            "JAXSEP_NUM_PROCESSES must be an integer >= 1, got 'two'",
        ),
    ]:
        result = subprocess.run(
            command, env={**env, **extra}, capture_output=True, text=True, check=False, cwd=ROOT
        )
        assert result.returncode == 2, result.stderr
        assert result.stderr.count("\n") == 1, result.stderr
        assert expected in result.stderr

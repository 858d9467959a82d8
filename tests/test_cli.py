"""Every `jaxsep` entry point: -h works, bad input exits 2 with one line and writes nothing."""

import subprocess
import sys

import pytest

from jaxsep.cli import main

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


def test_synth_unknown_soundfont_writes_nothing(capsys, tmp_path):
    out = tmp_path / "corpus"
    assert main(["synth", str(out), "--songs", "1", "--soundfonts", "nope.sf2"]) == 2
    assert "nope.sf2" in _one_line_error(capsys)
    assert list(tmp_path.iterdir()) == []

"""`jaxsep convert KIND SRC OUT` on the fixtures' checkpoint files; bad files write nothing."""

import json

import jax
import numpy as np
import pytest

import jaxsep
from jaxsep.cli import main
from jaxsep.convert import parse_levels, sha256_of
from jaxsep.errors import JaxsepError


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err and "Traceback" not in err
    return err


@pytest.mark.parametrize(
    ("kind", "relative", "extra", "model"),
    [
        ("jukebox", "jukebox/vqvae_5b_width8.pth.tar", ["--levels", "0"], "vqvae"),
        ("jukebox", "jukebox/vqvae_5b_width8_legacy.pth.tar", [], "vqvae"),
        ("xumx", "xumx/xumx_tiny_package.pth", [], "xumx"),
        ("umx", "umx/tiny_model", ["--targets", "vocals,drums"], "xumx"),
        ("chimera", "chimera/chimera_small_state_dict.pt", [], "chimera"),
    ],
)
def test_convert_writes_a_loadable_model_dir(kind, relative, extra, model, fixtures_dir, tmp_path):
    out = tmp_path / "model"
    assert main(["convert", kind, str(fixtures_dir / relative), str(out)] + extra) == 0
    loaded = jaxsep.load(out)
    assert loaded.config["model"] == model
    assert "params" in loaded.variables
    if kind == "jukebox":
        levels = loaded.config["model_kwargs"]["levels"]
        assert levels == (1 if extra else 3)
        digest = loaded.config["converted_from"]["sha256"]
        assert digest == sha256_of(fixtures_dir / relative)
        assert set(loaded.variables) == {"params", "codebook"}
    if kind == "umx":
        assert loaded.config["sources"] == ["vocals", "drums"]
    if kind == "chimera":  # a mono 16 kHz model separates stereo 44.1 kHz songs
        audio = np.random.default_rng(0).standard_normal((44100, 2)).astype(np.float32) * 0.1
        stems = jaxsep.Separator(loaded, segment=0.5)(audio, 44100)
        assert len(stems) == 2
        assert all(s.shape == (44100, 1) and np.isfinite(s).all() for s in stems.values())


def test_jukebox_formats_convert_to_identical_params(fixtures_dir, tmp_path):
    dirs = []
    for name in ("vqvae_5b_width8.pth.tar", "vqvae_5b_width8_legacy.pth.tar"):
        out = tmp_path / name
        assert main(["convert", "jukebox", str(fixtures_dir / "jukebox" / name), str(out)]) == 0
        dirs.append(jaxsep.load(out).variables)
    leaves_a, tree_a = jax.tree.flatten(dirs[0])
    leaves_b, tree_b = jax.tree.flatten(dirs[1])
    assert tree_a == tree_b
    for a, b in zip(leaves_a, leaves_b, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kind", ["jukebox", "xumx", "umx", "vggish", "chimera"])
def test_corrupt_truncated_and_foreign_files_write_nothing(kind, fixtures_dir, tmp_path, capsys):
    import torch

    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(np.random.default_rng(0).bytes(4096))
    source = fixtures_dir / "jukebox" / "vqvae_5b_width8.pth.tar"
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    foreign = tmp_path / "foreign.pth"
    torch.save({"some.other.weight": torch.zeros(3, 3)}, foreign)
    for bad in (corrupt, truncated, foreign):
        out = tmp_path / f"out-{bad.stem}"
        assert main(["convert", kind, str(bad), str(out)]) == 2
        err = _one_line(capsys)
        assert bad.name in err, err
        assert not out.exists()
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith((".out", "out"))]
    assert leftovers == []


def test_missing_source_is_one_line(tmp_path, capsys):
    assert main(["convert", "xumx", str(tmp_path / "nope.pth"), str(tmp_path / "out")]) == 2
    assert "nope.pth" in _one_line(capsys)
    assert not (tmp_path / "out").exists()


def test_parse_levels():
    assert parse_levels(None) is None
    assert parse_levels("0") == 1
    assert parse_levels("0,1") == 2
    assert parse_levels("1,0,2") == 3
    for bad in ("1", "0,2", "x"):
        with pytest.raises(JaxsepError, match="--levels"):
            parse_levels(bad)


def test_config_json_is_plain(fixtures_dir, tmp_path):
    out = tmp_path / "xumx"
    assert (
        main(["convert", "xumx", str(fixtures_dir / "xumx/xumx_tiny_package.pth"), str(out)]) == 0
    )
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == "xumx" and config["sources"]

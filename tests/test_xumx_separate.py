"""X-UMX/UMX separation hook (masks -> Wiener EM -> iSTFT) against open-unmix's Separator."""

import jax.numpy as jnp
import numpy as np
import pytest

import jaxsep
from jaxsep.convert import convert_to_model_dir
from jaxsep.models.xumx import separate_waveforms

TARGETS = ["vocals", "drums", "bass", "other"]


@pytest.fixture(scope="module")
def umx_tiny(fixtures_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("umx") / "model"
    convert_to_model_dir("umx", fixtures_dir / "umx" / "tiny_model", out, targets=TARGETS)
    return jaxsep.load(out)


@pytest.mark.parametrize("iterations", [0, 1])
def test_hook_equals_openunmix_separator(umx_tiny, fixtures_dir, iterations):
    # Separator(niter, softmask=False, residual=False, wiener_win_len=64), float32 (README).
    wave = np.load(fixtures_dir / "umx" / "tiny_vocals_residual_io.npz")["input_wav"]
    expected = np.load(fixtures_dir / "umx" / "tiny_4targets_io.npz")[
        f"estimates_niter{iterations}"
    ]
    config = umx_tiny.config | {
        "separation": {
            "wiener_iterations": iterations,
            "wiener_style": "openunmix",
            "wiener_window": 64,
        }
    }
    stems = separate_waveforms(
        umx_tiny.module, umx_tiny.variables, jnp.asarray(wave.transpose(0, 2, 1)), config
    )
    stems = np.asarray(stems).transpose(0, 1, 3, 2)  # [B, S, C, T] like open-unmix
    scale = np.abs(expected).max()
    np.testing.assert_allclose(stems, expected, rtol=1e-4, atol=1e-4 * scale)


def test_separator_runs_xumx_model_dir(fixtures_dir, tmp_path):
    out = tmp_path / "xumx"
    convert_to_model_dir("xumx", fixtures_dir / "xumx" / "xumx_tiny_package.pth", out)
    model = jaxsep.load(out)
    rate = int(model.config["sample_rate"])
    audio = np.random.default_rng(0).standard_normal((rate // 2, 2)).astype(np.float32) * 0.1
    # one segment exactly as long as the track: the Separator must equal the hook (with the
    # model directory's default post-filter: one norbert EM iteration) on the whole track
    separator = jaxsep.Separator(model, segment=0.5, overlap=0.25, batch_size=8)
    stems = separator(audio, rate)
    direct = separate_waveforms(
        model.module, model.variables, jnp.asarray(audio[None]), model.config
    )
    direct = np.asarray(direct)[0]
    assert list(stems) == model.config["sources"]
    for i, name in enumerate(model.config["sources"]):
        np.testing.assert_allclose(stems[name], direct[i], rtol=1e-4, atol=1e-5)
    no_wiener = model.config | {"separation": {"wiener_iterations": 0}}
    plain = separate_waveforms(model.module, model.variables, jnp.asarray(audio[None]), no_wiener)
    assert not np.allclose(np.asarray(plain)[0], direct, atol=1e-5)  # the EM stage did something


def test_separator_runs_a_bfloat16_model_dir_close_to_float32(fixtures_dir, tmp_path):
    """model_kwargs.dtype = bfloat16 in config.json: the Separator runs bf16 activations."""
    import json

    out = tmp_path / "xumx"
    convert_to_model_dir("xumx", fixtures_dir / "xumx" / "xumx_tiny_package.pth", out)
    float32 = jaxsep.load(out)
    config = json.loads((out / "config.json").read_text())
    config["model_kwargs"]["dtype"] = "bfloat16"
    (out / "config.json").write_text(json.dumps(config))
    bf16 = jaxsep.load(out)
    assert bf16.module.dtype == "bfloat16"
    rate = int(float32.config["sample_rate"])
    audio = np.random.default_rng(1).standard_normal((rate // 2, 2)).astype(np.float32) * 0.1
    run = lambda m: jaxsep.Separator(m, segment=0.5, batch_size=2)(audio, rate)  # noqa: E731
    reference, stems = run(float32), run(bf16)
    for name in float32.config["sources"]:
        assert stems[name].dtype == np.float32
        error = np.linalg.norm(stems[name] - reference[name]) / np.linalg.norm(reference[name])
        assert 0 < error < 2e-2, (name, error)

"""Jukebox VQ-VAE forward parity with the reference golden outputs (fixtures/jukebox)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsep.convert.jukebox import convert_jukebox
from jaxsep.models.vqvae import Model, VQVAEConfig

CHECKPOINTS = ("vqvae_5b_width8.pth.tar", "vqvae_5b_width8_legacy.pth.tar")
RTOL = 1e-4  # float32 parity, relative to each array's peak


def assert_close(actual, expected, name):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, name
    err = np.abs(actual - expected).max() / np.abs(expected).max()
    assert err < RTOL, f"{name}: relative error {err:.2e}"


@pytest.fixture(scope="module")
def golden(fixtures_dir):
    return dict(np.load(fixtures_dir / "jukebox" / "golden_forward.npz"))


def _run_all(module):
    """One jitted function for every method, so each config compiles once."""

    @jax.jit
    def run(variables, x):
        latents = module.apply(variables, x, method="encode")
        codes, dequantised = module.apply(variables, latents, method="quantize")
        decoded = module.apply(variables, dequantised, method="decode")
        return latents, codes, dequantised, decoded, module.apply(variables, x)

    return run


@pytest.fixture(scope="module")
def three_level(fixtures_dir):
    converted = [convert_jukebox(fixtures_dir / "jukebox" / name) for name in CHECKPOINTS]
    return _run_all(Model(**converted[0][0])), converted


def test_both_formats_convert_to_identical_variables(three_level):
    _, [(cfg_zip, v_zip), (cfg_legacy, v_legacy)] = three_level
    assert cfg_zip == cfg_legacy
    leaves_zip, tree_zip = jax.tree.flatten(v_zip)
    leaves_legacy, tree_legacy = jax.tree.flatten(v_legacy)
    assert tree_zip == tree_legacy
    assert all(np.array_equal(a, b) for a, b in zip(leaves_zip, leaves_legacy))


@pytest.mark.parametrize("checkpoint", [0, 1], ids=["zip", "legacy"])
def test_three_level_parity(three_level, golden, checkpoint):
    run, converted = three_level
    variables = converted[checkpoint][1]
    latents, codes, dequantised, decoded, forward = run(variables, golden["x_ntc"])
    for level in range(3):
        tag = f"level{level}"
        assert_close(latents[level].transpose(0, 2, 1), golden[f"{tag}_encoder_out_nct"], tag)
        np.testing.assert_array_equal(codes[level], golden[f"{tag}_codes"])
        np.testing.assert_array_equal(forward["codes"][level], golden[f"{tag}_codes"])
        assert_close(dequantised[level].transpose(0, 2, 1), golden[f"{tag}_dequantised_nct"], tag)
        assert_close(decoded[level], golden[f"{tag}_decoder_out_ntc"], tag)
        assert_close(forward["commit_losses"][level], golden[f"{tag}_commit_loss"], tag)
        metrics = forward["quantizer_metrics"][level]
        assert_close(metrics["fit"], golden[f"{tag}_fit"], tag)
        assert_close(metrics["pn"], golden[f"{tag}_prenorm"], tag)
    assert_close(forward["reconstructions"][0], golden["forward3_x_out_ntc"], "forward3")
    commit_total = sum(float(c) for c in forward["commit_losses"])
    assert_close(commit_total, golden["forward3_metric_commit_loss"], "commit total")


@pytest.mark.parametrize("checkpoint", CHECKPOINTS, ids=["zip", "legacy"])
def test_paper_single_level_parity(fixtures_dir, golden, checkpoint):
    config, variables = convert_jukebox(fixtures_dir / "jukebox" / checkpoint, levels=1)
    assert config["levels"] == 1 and config["multipliers"] == [2]
    assert set(variables["params"]) == {"encoders_0", "decoders_0"}
    module = Model(**config)
    out = jax.jit(module.apply)(variables, golden["x_ntc"])
    assert len(out["reconstructions"]) == 1
    assert_close(out["reconstructions"][0], golden["forward1_x_out_ntc"], "forward1")
    assert_close(out["commit_losses"][0], golden["forward1_metric_commit_loss"], "commit")


def test_stage2_encoder_targets(fixtures_dir, golden):
    """The level-0 encoder on the stage-2 mixture reproduces the stage-2 pred/target latents."""
    config, variables = convert_jukebox(fixtures_dir / "jukebox" / CHECKPOINTS[0], levels=1)
    module = Model(**config)
    encode = jax.jit(lambda v, x: module.apply(v, x, method="encode")[0])
    pair = np.concatenate([golden["x_ntc"], golden["stage2_mix_ntc"]])
    latents = np.asarray(encode(variables, pair)).transpose(0, 2, 1)
    assert_close(latents[:2], golden["stage2_target_nct"], "target")
    assert_close(latents[2:], golden["stage2_pred_nct"], "pred")


def random_variables(module, x, seed=0):
    """Variables drawn with numpy from the init shapes: avoids compiling the jax initialisers."""
    shapes = jax.eval_shape(module.init, jax.random.key(0), x)
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: rng.normal(0, 0.3, s.shape).astype(s.dtype), shapes)


def test_remat_matches_plain_forward_and_gradient():
    cfg = VQVAEConfig(levels=1, downs_t=(2,), strides_t=(2,), width=4, depth=2, multipliers=(1,))
    plain, remat = Model(**cfg.to_dict()), Model(**{**cfg.to_dict(), "remat": True})
    x = jax.random.normal(jax.random.key(0), (2, 64, 1))
    variables = random_variables(plain, x)

    def loss(module, params):
        latents = module.apply({**variables, "params": params}, x, method="encode")
        return jnp.sum(latents[0] ** 2)

    value, grad = jax.jit(jax.value_and_grad(lambda p: loss(plain, p)))(variables["params"])
    value_r, grad_r = jax.jit(jax.value_and_grad(lambda p: loss(remat, p)))(variables["params"])
    np.testing.assert_allclose(value, value_r, rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), grad, grad_r)


def test_config_sizes_match_reference():
    """Default config is the 5b model: 1,485,763 trainable parameters, hops 8/32/128."""
    cfg = VQVAEConfig()
    assert [cfg.hop(level) for level in range(3)] == [8, 32, 128]
    shapes = jax.eval_shape(Model().init, jax.random.key(0), jnp.zeros((1, 128, 1)))
    assert sum(np.prod(s.shape) for s in jax.tree.leaves(shapes["params"])) == 1_485_763
    assert VQVAEConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown VQ-VAE config keys: bogus"):
        VQVAEConfig.from_dict({"bogus": 1})

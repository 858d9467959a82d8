"""Jukebox VQ-VAE loss terms against the reference outputs in golden_forward.npz."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsep.losses import vqvae as L

# The fixture's (arbitrary) bandwidth constants, see fixtures/jukebox/README.md.
FIXTURE_BANDWIDTH = {"l1": 0.25, "l2": 0.05, "spec": 100.0}


@pytest.fixture(scope="module")
def golden(fixtures_dir):
    return dict(np.load(fixtures_dir / "jukebox" / "golden_forward.npz"))


def _nct_to_ntc(a):
    return jnp.asarray(a).transpose(0, 2, 1)


def test_stft_magnitude_matches_torch(golden):
    mag = L.stft_magnitude(jnp.asarray(golden["x_ntc"]), 2048, 240, 1200)
    expected = golden["spec_mag_x_nfft2048_hop240_win1200"].transpose(0, 2, 1)
    np.testing.assert_allclose(mag, expected, rtol=1e-4, atol=1e-4 * expected.max())


def test_spectral_pieces_match_reference(golden):
    x, y = jnp.asarray(golden["x_ntc"]), jnp.asarray(golden["level0_decoder_out_ntc"])
    per_res = np.stack([L.spectral_distance(y, x, r) for r in L.MULTISPEC_RESOLUTIONS], -1)
    np.testing.assert_allclose(per_res, golden["spec_multispectral_per_resolution"], rtol=1e-4)
    np.testing.assert_allclose(
        L.multispectral_distance(y, x), golden["spec_multispectral_per_example"], rtol=1e-4
    )
    np.testing.assert_allclose(
        L.spectral_distance(y, x, L.SPECTRAL_RESOLUTION),
        golden["spec_spectral_loss_per_example"],
        rtol=1e-4,
    )
    np.testing.assert_allclose(
        L.spectral_convergence(y, x), golden["spec_spectral_convergence_per_example"], rtol=1e-4
    )


def test_recon_terms_match_reference(golden):
    x, y = jnp.asarray(golden["x_ntc"]), jnp.asarray(golden["level0_decoder_out_ntc"])
    np.testing.assert_allclose(L.l2_loss(y, x), golden["recon_l2_raw_level0"], rtol=1e-5)
    np.testing.assert_allclose(L.l1_loss(y, x), golden["recon_l1_raw_level0"], rtol=1e-5)
    np.testing.assert_allclose(L.topk_l2_loss(y, x), golden["recon_linf_raw_level0"], rtol=1e-5)


def test_commitment_loss_matches_reference(golden):
    latent = _nct_to_ntc(golden["level0_encoder_out_nct"])
    dequantised = _nct_to_ntc(golden["level0_dequantised_nct"])
    np.testing.assert_allclose(
        L.commitment_loss(latent, dequantised), golden["level0_commit_loss"], rtol=1e-5
    )
    grad = jax.grad(lambda d: L.commitment_loss(latent, d))(dequantised)
    assert not np.any(grad)  # the codebook side gets no gradient (EMA only)


def test_stage1_loss_is_the_reference_single_level_forward(golden):
    x, y = jnp.asarray(golden["x_ntc"]), jnp.asarray(golden["forward1_x_out_ntc"])
    commit = jnp.asarray(golden["forward1_metric_commit_loss"])
    loss, metrics = jax.jit(L.stage1_loss)(y, x, commit, FIXTURE_BANDWIDTH)
    np.testing.assert_allclose(loss, golden["forward1_loss"], rtol=1e-5)
    for name in ("recons_loss", "multispectral_loss", "l2_loss", "linf_loss"):
        np.testing.assert_allclose(metrics[name], golden[f"forward1_metric_{name}"], rtol=1e-5)


def test_stage2_loss_matches_reference(golden):
    pred = _nct_to_ntc(golden["stage2_pred_nct"])
    target = _nct_to_ntc(golden["stage2_target_nct"])
    loss, metrics = L.stage2_loss(pred, target)
    np.testing.assert_allclose(loss, golden["stage2_loss_lmix"], rtol=1e-5)
    np.testing.assert_allclose(metrics["l2_loss"], golden["stage2_loss_l2"], rtol=1e-5)
    np.testing.assert_allclose(metrics["linf_loss"], golden["stage2_loss_linf"], rtol=1e-5)


def test_topk_l2_known_answer():
    estimate = jnp.zeros((2, 4, 1))
    target = jnp.asarray([[1.0, 2.0, 3.0, 0.0], [0.0, 0.0, 0.0, 4.0]])[..., None]
    # example 0: top-2 squared errors 9, 4 -> 6.5; example 1: 16, 0 -> 8; mean 7.25
    assert float(L.topk_l2_loss(estimate, target, k=2)) == pytest.approx(7.25)
    assert float(L.topk_l2_loss(estimate, target, k=100)) == pytest.approx(
        float(L.l2_loss(estimate, target))
    )


def test_bandwidth_statistics_known_answer():
    rng = np.random.default_rng(0)
    chunks = [rng.standard_normal((4096, 2)).astype(np.float32) * s for s in (0.5, 1.0, 2.0)]
    stats = L.bandwidth_statistics(iter(chunks), sample_rate=1000, max_seconds=100.0)
    everything = np.concatenate(chunks).astype(np.float64)
    assert stats["l2"] == pytest.approx(everything.var(), rel=1e-9)
    assert stats["l1"] == pytest.approx(np.abs(everything).mean(), rel=1e-9)
    norms = [np.linalg.norm(L.stft_magnitude(c[None], 2048, 256, 1536)) for c in chunks]
    assert stats["spec"] == pytest.approx(np.mean(norms), rel=1e-5)
    # the bound: 2 chunks = 16384 channel-samples >= 16.384 s x 1000 Hz, the third is never read
    bounded = L.bandwidth_statistics(iter(chunks), sample_rate=1000, max_seconds=16.0)
    assert bounded["l2"] == pytest.approx(np.concatenate(chunks[:2]).astype(np.float64).var())

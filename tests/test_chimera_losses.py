"""Chimera losses and targets against nussl / asteroid golden outputs (fixtures/chimera)."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsep.losses import chimera as losses

DC_CASES = ("dc_case0_mag_S2", "dc_case1_vad_S3", "dc_case2_ones_S2", "dc_case3_mag_S3_silent")
LOSS_RTOL = 1e-5  # fixture README: float32 reference vs float32 port


def load(fixtures_dir, name):
    return np.load(fixtures_dir / "chimera" / f"{name}.npz")


def drop_channel(x):
    """nussl's (B, T, F, 1[, K]) -> jaxsep's (B, T, F[, K])."""
    return x[..., 0, :] if x.ndim == 5 else x[..., 0]


def test_transforms_match_nussl_on_stft_fixture(fixtures_dir):
    d = load(fixtures_dir, "stft_transforms")
    ibm = losses.ideal_binary_mask(drop_channel(d["source_magnitudes"][None]))[0]
    np.testing.assert_array_equal(ibm, d["ideal_binary_mask"][..., 0, :])
    weights = losses.magnitude_weights(d["mix_magnitude"][None, ..., 0])[0]
    np.testing.assert_allclose(weights, d["weights"][..., 0], rtol=1e-5, atol=1e-6)
    # nussl's weights are W^(1/2): their squares sum to T*F
    np.testing.assert_allclose(np.sum(np.square(weights)), weights.size, rtol=1e-5)


def test_ideal_binary_mask_tie_rule():
    mags = jnp.array([[3.0, 1.0], [2.0, 2.0], [0.0, 0.0], [1.0, 5.0]])
    np.testing.assert_array_equal(losses.ideal_binary_mask(mags), [[1, 0], [0, 0], [0, 0], [0, 1]])
    three = jnp.array([[2.0, 2.0, 1.0], [1.0, 2.0, 0.0]])
    np.testing.assert_array_equal(losses.ideal_binary_mask(three), [[0, 0, 0], [0, 1, 0]])


@pytest.mark.parametrize("case", DC_CASES)
def test_deep_clustering_cases(fixtures_dir, case):
    d = load(fixtures_dir, case)
    v_raw, y, w = (drop_channel(d[k]) for k in ("V_raw", "Y", "w"))
    mix, sources = drop_channel(d["mix_magnitude"]), drop_channel(d["source_magnitudes"])
    np.testing.assert_array_equal(losses.ideal_binary_mask(sources), y)
    assert int(np.sum(np.all(y == 0, axis=-1))) == int(d["Y_zero_rows"])
    if "_mag_" in case:
        np.testing.assert_allclose(losses.magnitude_weights(mix), w, rtol=1e-5, atol=1e-6)
    elif "_vad_" in case:
        np.testing.assert_array_equal(losses.vad_weights(mix), w)
    else:
        np.testing.assert_array_equal(w, np.ones_like(w))

    loss = jax.jit(losses.deep_clustering_loss)(v_raw, y, w)
    np.testing.assert_allclose(loss, d["nussl_loss"], rtol=LOSS_RTOL)
    np.testing.assert_allclose(loss, d["np_loss_nussl_convention_f64"][0], rtol=LOSS_RTOL)
    per_example = losses.deep_clustering_per_example(v_raw, y, w)
    np.testing.assert_allclose(per_example, d["nussl_loss_per_example_f64"], rtol=LOSS_RTOL)

    asteroid = losses.deep_clustering_per_example(drop_channel(d["V_unit"]), y, w, "asteroid")
    np.testing.assert_allclose(asteroid, d["asteroid_loss_per_example"], rtol=LOSS_RTOL)
    np.testing.assert_allclose(asteroid, d["np_loss_asteroid_convention_f64"], rtol=LOSS_RTOL)

    grad = jax.jit(jax.grad(losses.deep_clustering_loss))(v_raw, y, w)
    ref = drop_channel(d["nussl_grad_V_raw"])
    np.testing.assert_allclose(grad, ref, rtol=0, atol=1e-5 * np.abs(ref).max())


def test_silent_bins_carry_no_gradient(fixtures_dir):
    d = load(fixtures_dir, "dc_case3_mag_S3_silent")
    v_raw, y, w = (drop_channel(d[k]) for k in ("V_raw", "Y", "w"))
    grad = jax.grad(losses.deep_clustering_loss)(v_raw, y, w)
    silent = np.all(y == 0, axis=-1) & (w == 0)
    assert silent.sum() == int(d["Y_zero_rows"])
    assert np.all(np.asarray(grad)[silent] == 0)
    assert np.abs(np.asarray(grad)[~silent]).max() > 0


def test_unknown_dc_normalization_is_refused():
    x = jnp.ones((1, 4, 3, 2))
    with pytest.raises(ValueError, match="normalization"):
        losses.deep_clustering_loss(x, x, jnp.ones((1, 4, 3)), "nope")


def test_mask_inference_pit_and_chimera(fixtures_dir):
    d = load(fixtures_dir, "mi_loss")
    mask, mix, sources = (
        drop_channel(d[k]) for k in ("mask", "mix_magnitude", "source_magnitudes")
    )
    estimates = mask * mix[..., None]
    np.testing.assert_allclose(estimates, drop_channel(d["estimates"]), rtol=1e-6)
    l1 = losses.mask_inference_loss(mask, mix, sources)
    np.testing.assert_allclose(l1, d["nussl_L1Loss"], rtol=LOSS_RTOL)
    np.testing.assert_allclose(l1, d["np_l1_f64"], rtol=LOSS_RTOL)
    swapped = losses.l1_loss(estimates, sources[..., ::-1])
    np.testing.assert_allclose(swapped, d["np_l1_swapped_sources_f64"], rtol=LOSS_RTOL)

    # nussl's PermutationInvariantLoss picks the best permutation per time-frequency bin
    per_bin = losses.permutation_invariant_l1(estimates, sources, per_bin=True)
    np.testing.assert_allclose(per_bin, d["nussl_PIT_L1Loss"], rtol=LOSS_RTOL)
    # utterance-level PIT: one permutation per example (numpy float64 reference)
    e64, s64 = (np.asarray(a, np.float64).reshape(2, -1, 2) for a in (estimates, sources))
    per_perm = [
        np.abs(e64 - s64[..., list(p)]).mean(axis=(1, 2)) for p in itertools.permutations(range(2))
    ]
    utterance = losses.permutation_invariant_l1(estimates, sources)
    np.testing.assert_allclose(utterance, np.min(per_perm, axis=0).mean(), rtol=LOSS_RTOL)
    assert per_bin < utterance <= min(float(l1), float(swapped)) + 1e-7

    np.testing.assert_array_equal(
        losses.ideal_binary_mask(sources), drop_channel(d["ideal_binary_mask"])
    )
    outputs = {"embedding": drop_channel(d["embedding_raw"]), "mask": mask}
    total, terms = jax.jit(losses.chimera_loss)(
        outputs, mix, sources, drop_channel(d["ideal_binary_mask"]), drop_channel(d["weights"])
    )
    np.testing.assert_allclose(terms["dc"], d["nussl_closure_DeepClusteringLoss"], rtol=LOSS_RTOL)
    np.testing.assert_allclose(terms["mi"], d["nussl_closure_L1Loss"], rtol=LOSS_RTOL)
    np.testing.assert_allclose(total, d["nussl_closure_total"], rtol=LOSS_RTOL)
    assert float(d["alpha"]) == pytest.approx(losses.CHIMERA_ALPHA)

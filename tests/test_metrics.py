"""Metrics against golden values (nussl / asteroid SI-SDR), hand-computed SDR and museval."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsep.errors import JaxsepError
from jaxsep.evaluate.metrics import BSSEvalScores, bss_eval, sdr, si_sdr

SAMPLE_RATE = 44100


@pytest.fixture(scope="module")
def sisdr_case(fixtures_dir):
    return dict(np.load(fixtures_dir / "chimera" / "si_sdr.npz"))


# ---------------------------------------------------------------- SI-SDR


def test_si_sdr_numpy_matches_float64_reference_and_nussl_eval(sisdr_case):
    refs, ests = sisdr_case["references"], sisdr_case["estimates"]
    scores = si_sdr(refs, ests)
    assert scores.dtype == np.float64 and scores.shape == (9,)
    np.testing.assert_allclose(scores, sisdr_case["np_sisdr_zero_mean_f64"], rtol=0, atol=1e-6)
    nussl_si_sdr = sisdr_case["nussl_scale_bss_eval_f64"][:, 0]
    np.testing.assert_allclose(scores, nussl_si_sdr, rtol=0, atol=1e-6)
    no_zero_mean = si_sdr(refs, ests, zero_mean=False)
    np.testing.assert_allclose(
        no_zero_mean, sisdr_case["np_sisdr_no_zero_mean_f64"], rtol=0, atol=1e-6
    )


def test_si_sdr_rows_behave_as_named(sisdr_case):
    """Scale invariance (positive and negative), DC offset only hurts without zero-meaning."""
    names = list(sisdr_case["pair_names"])
    scores = si_sdr(sisdr_case["references"], sisdr_case["estimates"])
    raw = si_sdr(sisdr_case["references"], sisdr_case["estimates"], zero_mean=False)
    unscaled = scores[names.index("unscaled_10dB")]
    for row in ("wrong_scale_x0.05_of_10dB", "wrong_scale_x-3_of_10dB", "dc_offset_0.5_on_10dB"):
        # the rescaled estimates were stored in float32: equal up to that rounding (~2e-9 dB)
        assert scores[names.index(row)] == pytest.approx(unscaled, abs=1e-7)
    assert raw[names.index("dc_offset_0.5_on_10dB")] < unscaled - 15.0
    assert scores[names.index("near_perfect_60dB")] > 59.0
    assert scores[names.index("random_independent")] < -30.0


def test_si_sdr_jit_float32_matches_asteroid(sisdr_case):
    refs = jnp.asarray(sisdr_case["references"])
    ests = jnp.asarray(sisdr_case["estimates"])
    jitted = jax.jit(si_sdr, static_argnames="zero_mean")
    scores = jitted(refs, ests)
    assert scores.dtype == jnp.float32
    # float32 vs asteroid's float32 torch: ~4e-6 dB apart in practice
    np.testing.assert_allclose(scores, sisdr_case["asteroid_sisdr_zero_mean"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(
        jitted(refs, ests, zero_mean=False),
        sisdr_case["asteroid_sisdr_no_zero_mean"],
        rtol=0,
        atol=1e-4,
    )
    # and with the float64 evaluation path, except where asteroid's eps inside the log counts
    # (the -42.7 dB row: ratio 5e-5, eps 1e-8 shifts it by 8e-4 dB, as in asteroid itself)
    np.testing.assert_allclose(scores, sisdr_case["np_sisdr_zero_mean_f64"], rtol=0, atol=1e-3)


def test_si_sdr_is_differentiable_and_finite_for_perfect_estimate_on_jax():
    signal = jnp.sin(jnp.linspace(0.0, 40.0, 800))
    score, grad = jax.value_and_grad(lambda e: si_sdr(signal, e))(signal)
    assert jnp.isfinite(score) and score > 60.0
    assert jnp.all(jnp.isfinite(grad))


def test_si_sdr_axis_selects_time_of_channels_last_audio(sisdr_case):
    refs = sisdr_case["references"][:2].T  # [T, 2]: two "channels"
    ests = sisdr_case["estimates"][:2].T
    np.testing.assert_allclose(
        si_sdr(refs, ests, axis=0), sisdr_case["np_sisdr_zero_mean_f64"][:2], atol=1e-6
    )


def test_si_sdr_rejects_mismatched_shapes():
    with pytest.raises(JaxsepError, match=r"si_sdr: reference shape \(10,\) != estimate"):
        si_sdr(np.ones(10), np.ones(11))


# ---------------------------------------------------------------- MDX SDR


def _with_noise_at(reference, target_db, rng):
    """reference + noise whose energy is exactly ||reference||^2 / 10^(target_db / 10)."""
    noise = rng.standard_normal(reference.shape)
    noise *= np.sqrt(np.sum(reference**2) / 10 ** (target_db / 10) / np.sum(noise**2))
    return reference + noise


def test_sdr_gives_the_known_energy_ratio_batched_over_leading_axes():
    rng = np.random.default_rng(0)
    references = rng.standard_normal((2, 3, 4000, 2))
    targets = np.array([[10.0, 0.0, -5.0], [20.0, 3.0, 35.0]])
    estimates = np.empty_like(references)
    for index in np.ndindex(targets.shape):
        estimates[index] = _with_noise_at(references[index], targets[index], rng)
    scores = sdr(references, estimates)
    assert scores.shape == (2, 3)
    np.testing.assert_allclose(scores, targets, rtol=0, atol=1e-6)
    song_total = np.mean(sdr(references[1], estimates[1]))  # MDX "Total": mean over sources
    assert song_total == pytest.approx(np.mean(targets[1]), abs=1e-6)


def test_sdr_jit_float32_agrees_with_numpy():
    rng = np.random.default_rng(1)
    references = rng.standard_normal((3, 2000, 2)).astype(np.float32)
    estimates = np.stack([_with_noise_at(r, db, rng) for r, db in zip(references, (6, 12, 24))])
    estimates = estimates.astype(np.float32)
    scores = jax.jit(sdr)(jnp.asarray(references), jnp.asarray(estimates))
    assert scores.dtype == jnp.float32
    np.testing.assert_allclose(scores, sdr(references, estimates), rtol=1e-4)


def test_sdr_perfect_estimate_is_large_and_finite():
    reference = np.random.default_rng(2).standard_normal((1000, 2))
    expected = 10 * np.log10((np.sum(reference**2) + 1e-7) / 1e-7)
    assert sdr(reference, reference) == pytest.approx(expected, rel=1e-12)
    assert np.isfinite(expected) and expected > 100.0
    jax_score = sdr(jnp.asarray(reference, jnp.float32), jnp.asarray(reference, jnp.float32))
    assert jnp.isfinite(jax_score) and jax_score > 100.0


def test_sdr_rejects_bad_shapes():
    with pytest.raises(JaxsepError, match="sdr: reference shape"):
        sdr(np.ones((10, 2)), np.ones((10, 1)))
    with pytest.raises(JaxsepError, match=r"sdr: expected \[\.\.\., time, channels\]"):
        sdr(np.ones(10), np.ones(10))


# ---------------------------------------------------------------- BSSEval v4 (museval)


@pytest.fixture(scope="module")
def short_song():
    """3 s, 2 stereo sources at 44.1 kHz, and a clean and a dirty estimate of them."""
    rng = np.random.default_rng(3)
    time = np.arange(3 * SAMPLE_RATE) / SAMPLE_RATE
    tone = np.sin(2 * np.pi * 220.0 * time) * (1.0 + 0.5 * np.sin(2 * np.pi * 0.7 * time))
    references = np.stack(
        [
            np.stack([tone, 0.8 * tone], axis=-1),
            0.5 * rng.standard_normal((time.size, 2)),
        ]
    )
    leak = references[::-1]

    def estimate(leak_gain, noise_gain):
        return references + leak_gain * leak + noise_gain * rng.standard_normal(references.shape)

    return references, estimate(0.05, 0.01), estimate(0.5, 0.2)


@pytest.fixture(scope="module")
def clean_scores(short_song):
    references, clean, _ = short_song
    return bss_eval(references, clean, SAMPLE_RATE)


def test_bss_eval_equals_museval_directly(short_song, clean_scores):
    import museval

    references, clean, _ = short_song
    direct = museval.evaluate(references, clean, win=SAMPLE_RATE, hop=SAMPLE_RATE)
    for ours, theirs in zip(clean_scores.framewise().values(), direct):
        np.testing.assert_array_equal(ours, theirs)
    assert clean_scores.sdr.shape == (2, 3)


def test_bss_eval_scores_cleaner_estimates_higher(short_song, clean_scores):
    references, _, dirty = short_song
    dirty_scores = bss_eval(references, dirty, SAMPLE_RATE)
    clean_medians, dirty_medians = clean_scores.medians(), dirty_scores.medians()
    for name in ("SDR", "ISR", "SIR", "SAR"):
        assert np.all(np.isfinite(clean_scores.framewise()[name]))
        assert clean_medians[name].shape == (2,)
        assert np.all(clean_medians[name] > dirty_medians[name] + 3.0), name
    assert np.all(clean_medians["SDR"] > 15.0)


def test_float32_signals_score_as_their_float64_values_with_both_backends(short_song):
    """What a separator and the audio reader return: no float64 copy is needed to score it."""
    references, _, dirty = short_song
    refs32, ests32 = references.astype(np.float32), dirty.astype(np.float32)
    for backend in ("jax", "museval"):
        single = bss_eval(refs32, ests32, SAMPLE_RATE, backend=backend).framewise()
        double = bss_eval(
            refs32.astype(np.float64), ests32.astype(np.float64), SAMPLE_RATE, backend=backend
        ).framewise()
        for name, values in single.items():
            assert values.dtype == np.float64
            np.testing.assert_array_equal(values, double[name], err_msg=f"{backend} {name}")


def test_bss_eval_medians_ignore_silent_frames_like_museval():
    framewise = np.array([[1.0, np.nan, 3.0, 7.0], [np.nan] * 4])
    scores = BSSEvalScores(framewise, framewise, framewise, framewise)
    medians = scores.medians()
    np.testing.assert_array_equal(medians["SDR"], [3.0, np.nan])
    assert set(medians) == {"SDR", "ISR", "SIR", "SAR"}


def test_bss_eval_rejects_bad_input_in_one_line(short_song, clean_scores):
    references, clean, _ = short_song
    with pytest.raises(JaxsepError, match="bss_eval: reference shape .* != estimate shape"):
        bss_eval(references, clean[:, :-10], SAMPLE_RATE)
    with pytest.raises(JaxsepError, match=r"expected \[sources, time, channels\]"):
        bss_eval(references[0], clean[0], SAMPLE_RATE)
    silent = references.copy()
    silent[1] = 0.0
    with pytest.raises(JaxsepError) as error:
        bss_eval(silent, clean, SAMPLE_RATE)
    assert "\n" not in str(error.value) and "non-silent" in str(error.value)
    with pytest.raises(JaxsepError, match="non-silent.*source 1 is all 0s"):
        bss_eval(silent, clean, SAMPLE_RATE, backend="jax")
    # the jax backend gives museval's scores (its tone source even needs the dense fallback)
    jax_scores = bss_eval(references, clean, SAMPLE_RATE, backend="jax")
    for name, theirs in clean_scores.framewise().items():
        np.testing.assert_allclose(jax_scores.framewise()[name], theirs, rtol=0, atol=1e-3)
    with pytest.raises(JaxsepError, match="unknown backend"):
        bss_eval(references, clean, SAMPLE_RATE, backend="torch")
    noisy = clean.copy()
    noisy[0, 5, 0] = np.nan
    with pytest.raises(JaxsepError, match="contain NaN or inf"):
        bss_eval(references, noisy, SAMPLE_RATE)
    with pytest.raises(JaxsepError, match="must be positive, got 0, 1.0, 1.0"):
        bss_eval(references, clean, 0)
    with pytest.raises(JaxsepError, match="at least one \\(time\\) axis, got a scalar"):
        si_sdr(np.float32(1.0), np.float32(1.0))

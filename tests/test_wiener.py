"""Wiener/EM post-filter parity with Open-Unmix's Separator and norbert, plus its invariants."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsep.audio.wiener import wiener
from jaxsep.errors import JaxsepError

REL = 1e-4
SAMPLE_RATE = 44100
UMX_TARGETS_4 = ("vocals", "drums", "bass", "other")


def assert_close(actual, expected, rel=REL):
    """``rel`` relative, with an absolute floor of ``rel * max|expected|`` for near-zero bins."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    scale = float(np.max(np.abs(expected)))
    np.testing.assert_allclose(actual, expected, rtol=rel, atol=rel * scale)


def complex_from_pairs(array):
    return array[..., 0] + 1j * array[..., 1]


def load_umx_case(fixtures_dir, name, targets, niter):
    """Open-Unmix layouts (batch, [target,] channel, bin, frame) -> ours (batch, [S,] T, F, C)."""
    data = np.load(fixtures_dir / "umx" / name)
    mix = complex_from_pairs(data["mix_stft"]).transpose(0, 3, 2, 1).astype(np.complex64)
    mags = np.stack([data[f"spec_{t}"] for t in targets], axis=1).transpose(0, 1, 4, 3, 2)
    expected = complex_from_pairs(data[f"targets_stft_niter{niter}"]).transpose(0, 1, 4, 3, 2)
    n_fft = 2 * (mix.shape[-2] - 1)
    return mags, mix, expected, n_fft


# (file, targets, wiener_win_len, residual, niter, well_conditioned) -- every Separator case.
UMX_CASES = [
    ("full_io.npz", ("vocals",), 32, True, 0, True),
    ("full_io.npz", ("vocals",), 32, True, 1, False),
    ("tiny_vocals_residual_io.npz", ("vocals",), 64, True, 0, True),
    ("tiny_vocals_residual_io.npz", ("vocals",), 64, True, 1, True),
    ("tiny_4targets_io.npz", UMX_TARGETS_4, 64, False, 0, True),
    ("tiny_4targets_io.npz", UMX_TARGETS_4, 64, False, 1, True),
    ("tiny_4targets_io.npz", UMX_TARGETS_4, 64, False, 2, False),
]


@pytest.mark.parametrize("name,targets,window,residual,niter,well_conditioned", UMX_CASES)
def test_openunmix_separator_fixtures(
    fixtures_dir, name, targets, window, residual, niter, well_conditioned
):
    mags, mix, expected, n_fft = load_umx_case(fixtures_dir, name, targets, niter)
    run = partial(wiener, iterations=niter, residual=residual, window=window, style="openunmix")
    actual = np.asarray(run(mags, mix))
    assert actual.dtype == np.complex64
    if well_conditioned:
        assert_close(actual, expected)
        return
    # The test signal has a 440 Hz sine in both channels (fixture README), so in that bin every
    # spatial covariance is nearly rank one and Cxx = sum v R + 1e-5 I is ill-conditioned: the
    # float32 reference itself is off from the exact (float64) result by up to 4e-4 (full,
    # niter 1) and 8e-3 (tiny, niter 2) of max|Y| there. Every other bin must match at 1e-4;
    # in that bin ours must be at least as close to the float64 result as the reference is.
    coherent_bin = round(440 * n_fft / SAMPLE_RATE)
    others = np.arange(expected.shape[-2]) != coherent_bin
    assert_close(actual[..., others, :], expected[..., others, :])
    with jax.enable_x64(True):
        exact = np.asarray(run(mags.astype(np.float64), mix.astype(np.complex128)))
    assert exact.dtype == np.complex128
    assert_close(exact[..., others, :], expected[..., others, :])
    ours_error = np.max(np.abs(actual - exact)[..., coherent_bin, :])
    reference_error = np.max(np.abs(expected - exact)[..., coherent_bin, :])
    assert ours_error <= reference_error


def load_norbert_case(fixtures_dir):
    """tiny_io.npz (frame, bin, channel, source) -> ours (S, T, F, C)."""
    data = np.load(fixtures_dir / "xumx" / "tiny_io.npz")
    mags = data["norbert_V"].transpose(3, 0, 1, 2)
    mix = data["mix_stft_complex_real"] + 1j * data["mix_stft_complex_imag"]
    expected = (data["wiener_niter1_real"] + 1j * data["wiener_niter1_imag"]).transpose(3, 0, 1, 2)
    return mags, mix, expected


def test_norbert_fixture_float32(fixtures_dir):
    mags, mix, expected = load_norbert_case(fixtures_dir)
    actual = wiener(mags, mix.astype(np.complex64), iterations=1, style="norbert")
    assert actual.dtype == jnp.complex64
    assert_close(actual, expected)


def test_norbert_fixture_float64(fixtures_dir):
    # The reference ran in complex128 and was stored as float32 parts: 1e-6 is that storage.
    mags, mix, expected = load_norbert_case(fixtures_dir)
    with jax.enable_x64(True):
        actual = np.asarray(
            wiener(mags.astype(np.float64), mix.astype(np.complex128), style="norbert")
        )
    assert actual.dtype == np.complex128
    assert_close(actual, expected, rel=1e-6)


def random_case(shape_lead=(), n_src=3, n_frames=17, n_bins=9, n_chan=2, seed=0):
    rng = np.random.default_rng(seed)
    shape = (*shape_lead, n_frames, n_bins, n_chan)
    mix = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
    mags = np.abs(rng.standard_normal((*shape_lead, n_src, *shape[-3:]))).astype(np.float32)
    return mags, 30.0 * mix  # |X| above scale_factor, so the max_abs rescaling is exercised


def test_jit_matches_eager():
    mags, mix = random_case()
    kwargs = dict(iterations=2, residual=True, window=5)
    jitted = jax.jit(partial(wiener, **kwargs))
    assert_close(jitted(jnp.asarray(mags), jnp.asarray(mix)), wiener(mags, mix, **kwargs), 1e-6)


@pytest.mark.parametrize("window", [17, 40])
def test_window_covering_all_frames_is_whole_track(window):
    mags, mix = random_case()
    whole = wiener(mags, mix, iterations=2)
    assert_close(wiener(mags, mix, iterations=2, window=window), whole, 1e-6)


def test_blocks_are_filtered_independently():
    mags, mix = random_case(n_frames=17)
    windowed = wiener(mags, mix, iterations=2, residual=True, window=7)  # blocks 7, 7, 3
    blocks = [
        wiener(mags[:, start : start + 7], mix[start : start + 7], iterations=2, residual=True)
        for start in (0, 7, 14)
    ]
    assert_close(windowed, np.concatenate(blocks, axis=1), 1e-5)


def test_batch_axes_match_single_items():
    mags, mix = random_case(shape_lead=(2, 3))
    batched = np.asarray(wiener(mags, mix, iterations=1, window=6))
    assert batched.shape == (2, 3, 3, 17, 9, 2)
    for i, j in np.ndindex(2, 3):
        assert_close(batched[i, j], wiener(mags[i, j], mix[i, j], iterations=1, window=6), 1e-5)


def test_initial_estimates_and_residual():
    mags, mix = random_case()
    phase = mix / np.abs(mix)
    plain = np.asarray(wiener(mags, mix, iterations=0))
    assert_close(plain, mags * phase[None], 1e-6)
    with_residual = np.asarray(wiener(mags, mix, iterations=0, residual=True))
    assert with_residual.shape[0] == mags.shape[0] + 1
    assert_close(with_residual[:-1], plain, 1e-6)
    assert_close(with_residual[-1], mix - plain.sum(axis=0), 1e-5)
    soft = np.asarray(wiener(mags, mix, iterations=0, softmask=True))
    assert_close(soft, mix[None] * mags / mags.sum(axis=0), 1e-5)


@pytest.mark.parametrize("style", ["openunmix", "norbert"])
def test_em_estimates_sum_to_the_mixture(style):
    # sum_s v_s R_s Cxx^-1 = (Cxx - sqrt(eps) I) Cxx^-1, which is I up to the regulariser.
    mags, mix = random_case()
    estimates = wiener(mags, mix, iterations=3, style=style)
    assert_close(np.sum(np.asarray(estimates), axis=0), mix)


def numpy_em(mags, mix, iterations, eps, style):
    """Straightforward float64 EM (whole track, magnitude x phase init) for any channel count."""
    y = mags * np.exp(1j * np.angle(mix))[None]
    max_abs = max(1.0, np.abs(mix).max() / 10.0)
    y, x = y / max_abs, mix / max_abs
    n_chan = mix.shape[-1]
    for _ in range(iterations):
        v = np.mean(np.abs(y) ** 2, axis=-1)
        r = np.einsum("stfc,stfd->sfcd", y, y.conj()) / (eps + v.sum(axis=1))[..., None, None]
        cxx = np.einsum("stf,sfcd->tfcd", v, r) + np.sqrt(eps) * np.eye(n_chan)
        if n_chan == 1 and style == "norbert":
            cxx = cxx + eps
        gain = np.einsum("sfcd,tfde->stfce", r, np.linalg.inv(cxx)) * v[..., None, None]
        y = np.einsum("stfce,tfe->stfc", gain, x)
    return y * max_abs


@pytest.mark.parametrize(
    "n_chan,style", [(1, "openunmix"), (1, "norbert"), (2, "openunmix"), (3, "norbert")]
)
def test_any_channel_count_matches_numpy(n_chan, style):
    mags, mix = random_case(n_chan=n_chan, seed=n_chan)
    eps = 1e-10 if style == "openunmix" else np.finfo(np.float64).eps
    expected = numpy_em(mags.astype(np.float64), mix.astype(np.complex128), 2, eps, style)
    assert_close(wiener(mags, mix, iterations=2, style=style), expected)


@pytest.mark.parametrize(
    "change,message",
    [
        (dict(mix_real=True), "must be complex"),
        (dict(mags_shape=(3, 17, 8, 2)), "do not match"),
        (dict(mags_shape=(17, 9, 2)), "expected magnitudes"),
        (dict(iterations=-1), "iterations"),
        (dict(window=0), "window"),
        (dict(style="torch"), "style"),
    ],
)
def test_bad_arguments_raise_one_line(change, message):
    mags, mix = random_case()
    if change.pop("mix_real", False):
        mix = np.abs(mix)
    if "mags_shape" in change:
        mags = np.ones(change.pop("mags_shape"), np.float32)
    with pytest.raises(JaxsepError, match=message) as info:
        wiener(mags, mix, **change)
    assert "\n" not in str(info.value)

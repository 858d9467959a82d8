"""STFT/iSTFT parity with torch, scipy and the stored outputs of Open-Unmix, X-UMX and nussl."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.signal
import torch

from jaxsep.audio.stft import get_window, istft, scipy_istft, scipy_stft, stft

REL = 1e-4


def assert_close(actual, expected, rel=REL):
    """Relative closeness at ``rel``, with an absolute floor of ``rel * max|expected|``.

    Float32 FFT rounding error is proportional to the largest value in the transform, not to
    each bin, so near-silent bins (and zero crossings of a waveform) need that absolute floor;
    everything else is held to ``rel`` relative.
    """
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    scale = float(np.max(np.abs(expected)))
    np.testing.assert_allclose(actual, expected, rtol=rel, atol=rel * scale)


def torch_stft(x, n_fft, hop, window, center, pad_mode):
    """torch.stft on [..., T] numpy -> [..., frames, bins] numpy."""
    flat = torch.from_numpy(x.reshape(-1, x.shape[-1]))
    spec = torch.stft(
        flat,
        n_fft,
        hop,
        window=torch.from_numpy(window),
        center=center,
        pad_mode=pad_mode,
        normalized=False,
        onesided=True,
        return_complex=True,
    ).numpy()
    return spec.reshape(*x.shape[:-1], *spec.shape[-2:]).swapaxes(-1, -2)


def torch_istft(spec, n_fft, hop, window, center, length):
    flat = torch.from_numpy(spec.reshape(-1, *spec.shape[-2:]).swapaxes(-1, -2).copy())
    out = torch.istft(
        flat, n_fft, hop, window=torch.from_numpy(window), center=center, length=length
    ).numpy()
    return out.reshape(*spec.shape[:-2], out.shape[-1])


def signal(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def test_windows_match_torch_and_scipy():
    # torch evaluates the cosine in float32 (a few ulp off); ours is float64 rounded once.
    np.testing.assert_allclose(get_window("hann", 400), torch.hann_window(400).numpy(), atol=1e-6)
    np.testing.assert_allclose(
        get_window("hamming", 256), torch.hamming_window(256).numpy(), atol=1e-6
    )
    sqrt_hann = np.sqrt(scipy.signal.get_window("hann", 512))
    np.testing.assert_allclose(get_window("sqrt_hann", 512), sqrt_hann, atol=1e-7)
    with pytest.raises(ValueError, match="unknown window"):
        get_window("kaiser", 16)


# (256, 64) and (512, 128) take the reshape framing, (256, 100) and (200, 48) the gather.
@pytest.mark.parametrize("n_fft,hop", [(256, 64), (512, 128), (256, 100), (200, 48)])
@pytest.mark.parametrize("center", [True, False])
@pytest.mark.parametrize("pad_mode", ["reflect", "constant"])
def test_stft_matches_torch(n_fft, hop, center, pad_mode):
    # Lengths: a multiple of hop and one that is not (1337 is prime).
    for length in (8 * hop, 1337):
        x = signal((2, 3, length), seed=length)
        window = get_window("hann", n_fft)
        expected = torch_stft(x, n_fft, hop, window, center, pad_mode)
        actual = stft(x, n_fft, hop, "hann", center=center, pad_mode=pad_mode)
        assert actual.dtype == jnp.complex64
        assert_close(actual, expected)


def test_stft_short_window_is_centred_like_torch():
    x = signal((2, 1000))
    window = get_window("hann", 200)
    flat = torch.stft(
        torch.from_numpy(x),
        256,
        64,
        win_length=200,
        window=torch.from_numpy(window),
        return_complex=True,
    ).numpy()
    assert_close(stft(x, 256, 64, window), flat.swapaxes(-1, -2))


@pytest.mark.parametrize("n_fft,hop", [(256, 64), (256, 100), (200, 48)])
@pytest.mark.parametrize("center", [True, False])
def test_istft_matches_torch(n_fft, hop, center):
    # Without center, the first and last samples have only a Hann window's zero over them and
    # torch refuses (NOLA); Hamming is never zero, so it is the window for that case.
    name = "hann" if center else "hamming"
    window = get_window(name, n_fft)
    # With center, `length` may equal, cut or extend (zero-pad) the natural output.
    cases = [(8 * hop, None), (1337, None)]
    if center:
        cases += [(8 * hop, 8 * hop), (1337, 1337 - 5), (1337, 1337 + 7)]
    for length, out_length in cases:
        x = signal((2, 2, length), seed=length)
        spec = torch_stft(x, n_fft, hop, window, center, "reflect")
        expected = torch_istft(spec, n_fft, hop, window, center, out_length)
        actual = istft(spec, n_fft, hop, name, center=center, length=out_length)
        assert actual.dtype == jnp.float32
        assert_close(actual, expected)


@pytest.mark.parametrize("n_fft,hop", [(512, 128), (256, 100)])
def test_scipy_mode_matches_scipy(n_fft, hop):
    x = signal((2, 1003))
    window = get_window("sqrt_hann", n_fft)
    _, _, expected = scipy.signal.stft(
        x, nperseg=n_fft, noverlap=n_fft - hop, window=window, boundary="zeros", padded=True
    )
    actual = scipy_stft(x, n_fft, hop, "sqrt_hann")
    assert_close(actual, expected.swapaxes(-1, -2))

    _, expected_wave = scipy.signal.istft(
        expected, nperseg=n_fft, noverlap=n_fft - hop, window=window, boundary=True
    )
    assert_close(scipy_istft(actual, n_fft, hop, "sqrt_hann"), expected_wave)


def test_scipy_mode_matches_nussl_fixture(fixtures_dir):
    data = np.load(fixtures_dir / "chimera" / "stft_transforms.npz")
    np.testing.assert_allclose(get_window("sqrt_hann", 512), data["window"], atol=1e-7)
    expected = (data["mix_stft_real"] + 1j * data["mix_stft_imag"])[..., 0].T  # (F, T) -> (T, F)
    spec = scipy_stft(data["audio_mix"], 512, 128, "sqrt_hann")
    assert_close(spec, expected)
    wave = scipy_istft(expected, 512, 128, "sqrt_hann", length=16000)
    assert_close(wave, data["istft_roundtrip"][0])
    # nussl's magnitude input of the ChimeraNet is |STFT| in (T, F, C).
    assert_close(jnp.abs(spec), data["mix_magnitude"][..., 0])


@pytest.mark.parametrize("name,n_fft", [("full_io", 4096), ("tiny_vocals_residual_io", 512)])
def test_torch_mode_matches_openunmix_fixture(fixtures_dir, name, n_fft):
    data = np.load(fixtures_dir / "umx" / f"{name}.npz")
    hop = n_fft // 4
    wave = data["input_wav"]  # (1, 2, n)
    mix = data["mix_stft"]  # (1, 2, F, T, re/im)
    spec = stft(wave, n_fft, hop, "hann", center=True, pad_mode="reflect")
    assert_close(spec, (mix[..., 0] + 1j * mix[..., 1]).swapaxes(-1, -2))
    assert_close(jnp.abs(spec), data["mix_mag"].swapaxes(-1, -2))
    # The Separator's ISTFT of the Wiener output, cut to the input length.
    targets = data["targets_stft_niter1"]  # (1, J, 2, F, T, re/im)
    estimates = istft(
        (targets[..., 0] + 1j * targets[..., 1]).swapaxes(-1, -2),
        n_fft,
        hop,
        "hann",
        center=True,
        length=wave.shape[-1],
    )
    assert_close(estimates, data["estimates_niter1"])


@pytest.mark.parametrize("name,n_fft", [("full_io", 4096), ("tiny_io", 512)])
def test_torch_mode_matches_xumx_fixture(fixtures_dir, name, n_fft):
    data = np.load(fixtures_dir / "xumx" / f"{name}.npz")
    hop = n_fft // 4
    spec = stft(data["input_wav"], n_fft, hop, "hann")  # (1, 2, T, F)
    assert_close(jnp.abs(spec), data["mix_mag"].transpose(1, 2, 0, 3))  # (T, 1, 2, F)
    # Phase is compared through the unit phasor: angles are ill-defined on near-silent bins.
    phasor = np.exp(1j * data["mix_phase"].swapaxes(-1, -2))
    assert_close(np.abs(spec) * phasor, spec)
    # Model's time signals: ISTFT of the masked magnitudes with the mixture phase, no length.
    masked = data["masked_spec"].transpose(0, 2, 3, 1, 4) * phasor  # (S, 1, 2, T, F)
    assert_close(istft(masked, n_fft, hop, "hann", center=True), data["time_signals"])


def test_scipy_istft_matches_xumx_eval_recipe(fixtures_dir):
    # The X-UMX eval recipe: scipy.signal.istft(Y / (n_fft / 2), boundary=True), Hann window.
    data = np.load(fixtures_dir / "xumx" / "tiny_io.npz")
    wiener = data["wiener_niter1_real"] + 1j * data["wiener_niter1_imag"]  # (T, F, 2, S)
    spec = wiener.transpose(3, 2, 0, 1) / (512 / 2)  # (S, 2, T, F)
    assert_close(scipy_istft(spec, 512, 128, "hann"), data["estimates_niter1"])


def test_stft_matches_xumx_loss_transform(fixtures_dir):
    data = np.load(fixtures_dir / "xumx" / "mdl_loss.npz")
    targets = data["targets"]  # (B, 4, 2, L) -> viewed (B, 8, L) by the recipe
    magnitude = jnp.abs(stft(targets.reshape(2, 8, -1), 4096, 1024, "hann"))
    assert_close(magnitude, data["gt_spec"].transpose(1, 2, 0, 3))  # (T, B, 8, F)


@pytest.mark.parametrize("n_fft,hop", [(256, 64), (256, 100)])
def test_round_trip_restores_signal(n_fft, hop):
    x = signal((3, 2, 2001))
    spec = stft(x, n_fft, hop, "hann")
    assert_close(istft(spec, n_fft, hop, "hann", length=2001), x)
    spec = scipy_stft(x, n_fft, hop, "sqrt_hann")
    assert_close(scipy_istft(spec, n_fft, hop, "sqrt_hann", length=2001), x)


def test_jit_matches_eager_with_static_and_traced_windows():
    x = signal((2, 2, 3000))
    window = get_window("hann", 512)

    @jax.jit
    def round_trip(wave, win):
        spec = stft(wave, 512, 128, win)
        return spec, istft(spec, 512, 128, win, length=wave.shape[-1])

    spec, wave = round_trip(x, window)  # window traced: envelope computed in jnp
    assert_close(spec, stft(x, 512, 128, "hann"))
    assert_close(wave, x)
    jitted = jax.jit(lambda w: scipy_istft(scipy_stft(w, 400, 160, "hann"), 400, 160, "hann"))
    assert_close(jitted(x)[..., :3000], x)  # static window name, gather framing


def test_gradient_matches_torch():
    x = signal((2, 1500))

    def loss(wave):
        return jnp.sum(jnp.abs(stft(wave, 256, 100, "hann")))

    grad = jax.grad(loss)(jnp.asarray(x))
    xt = torch.from_numpy(x).requires_grad_(True)
    spec = torch.stft(xt, 256, 100, window=torch.hann_window(256), return_complex=True)
    spec.abs().sum().backward()
    assert_close(grad, xt.grad.numpy())


def test_bad_arguments_raise():
    x = np.zeros((2, 100), np.float32)
    with pytest.raises(ValueError, match="pad_mode"):
        stft(x, 32, 8, "hann", pad_mode="wrap")
    with pytest.raises(ValueError, match="scaling"):
        stft(x, 32, 8, "hann", scaling="psd")
    with pytest.raises(ValueError, match="shorter than n_fft"):
        stft(x, 256, 64, "hann", center=False)
    with pytest.raises(ValueError, match="window"):
        stft(x, 32, 8, np.ones(64, np.float32))

"""Host-side augmentation: gain, channel swap, pitch shift, time stretch, determinism."""

import numpy as np

from jaxsep.data.augment import Augmentation, StemAugment, apply_stem

SR = 44100


def sine(freq: float, seconds: float, onset: float = 0.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    left = np.sin(2 * np.pi * freq * t) * (t >= onset)
    return np.stack([left, 0.5 * left], axis=1).astype(np.float32)


def peak_frequency(audio: np.ndarray) -> float:
    """Frequency of the strongest FFT bin, refined by parabolic interpolation of log magnitude."""
    x = audio[:, 0] * np.hanning(audio.shape[0])
    spectrum = np.log(np.abs(np.fft.rfft(x, n=8 * x.size)) + 1e-12)
    k = int(np.argmax(spectrum))
    a, b, c = spectrum[k - 1 : k + 2]
    return (k + 0.5 * (a - c) / (a - 2 * b + c)) * SR / (8 * x.size)


def test_off_changes_nothing_and_draws_nothing():
    rng = np.random.default_rng(0)
    params = Augmentation().draw(rng, 3)
    assert params == [StemAugment()] * 3
    assert rng.random() == np.random.default_rng(0).random()
    x = sine(440, 0.1)
    np.testing.assert_array_equal(apply_stem(x, params[0], SR, x.shape[0]), x)


def test_gain_range_and_channel_swap():
    augment = Augmentation(gain=True, channel_swap=True)
    params = augment.draw(np.random.default_rng(1), 400)
    gains = np.array([p.gain for p in params])
    assert gains.min() >= 0.25 and gains.max() <= 1.25
    assert gains.min() < 0.35 and gains.max() > 1.15  # spans the range
    swaps = np.mean([p.swap_channels for p in params])
    assert 0.4 < swaps < 0.6
    x = sine(440, 0.1)
    out = apply_stem(x, StemAugment(gain=0.5, swap_channels=True), SR, x.shape[0])
    np.testing.assert_allclose(out[:, 0], 0.5 * x[:, 1])
    np.testing.assert_allclose(out[:, 1], 0.5 * x[:, 0])


def test_pitch_shift_moves_a_sine_by_the_semitone_ratio():
    x = sine(440.0, 1.5)
    frames = SR
    for semitones in (-2.5, 3.0):
        params = StemAugment(semitones=semitones)
        out = apply_stem(x[: params.input_frames(frames)], params, SR, frames)
        assert out.shape == (frames, 2)
        middle = out[SR // 4 : 3 * SR // 4]
        expected = 440.0 * 2 ** (semitones / 12)
        assert abs(peak_frequency(middle) / expected - 1) < 2e-3
        assert np.abs(out[-100:, 0]).max() > 0.5  # no faded tail


def test_time_stretch_keeps_length_and_pitch_and_moves_onsets():
    frames = SR
    x = sine(440.0, 1.5, onset=0.5)  # starts at 0.5 s; long enough for every read
    for stretch in (0.8, 1.25):
        params = StemAugment(stretch=stretch)
        needed = params.input_frames(frames)
        out = apply_stem(x[:needed], params, SR, frames)
        assert out.shape == (frames, 2)
        envelope = np.abs(out[:, 0])
        onset = np.argmax(envelope > 0.5) / SR
        assert abs(onset - 0.5 / stretch) < 0.03
        assert abs(peak_frequency(out[-SR // 4 :]) / 440.0 - 1) < 2e-3
        assert np.abs(out[-100:, 0]).max() > 0.5  # read enough input: no silent padded tail


def test_draws_are_deterministic_per_generator():
    augment = Augmentation(gain=True, channel_swap=True, pitch_shift=True, time_stretch=True)
    first = augment.draw(np.random.default_rng(7), 4)
    again = augment.draw(np.random.default_rng(7), 4)
    assert first == again
    assert all(-3 <= p.semitones <= 3 and 0.8 <= p.stretch <= 1.2 for p in first)
    assert len({p.semitones for p in first}) == 4
    shared = Augmentation(pitch_shift=True, time_stretch=True, shared_pitch_and_tempo=True)
    assert len({(p.semitones, p.stretch) for p in shared.draw(np.random.default_rng(7), 4)}) == 1

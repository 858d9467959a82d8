"""Audio file reading, writing and resampling: round trips and one-line errors naming the file."""

import subprocess

import numpy as np
import pytest
import soundfile

from jaxsep.audio.io import read_audio, resample, write_audio
from jaxsep.errors import JaxsepError


def sine(frequency, sample_rate, seconds, channels=2):
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    wave = 0.5 * np.sin(2 * np.pi * frequency * t)
    return np.stack([wave * (0.5 + 0.5 * c) for c in range(channels)], axis=1).astype(np.float32)


def dominant_frequency(wave, sample_rate):
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    return np.argmax(spectrum) * sample_rate / len(wave)


def assert_one_line_error(error, path):
    message = str(error.value)
    assert path.name in message
    assert "\n" not in message


@pytest.fixture
def stereo():
    rng = np.random.default_rng(0)
    return (0.3 * rng.standard_normal((4410, 2))).astype(np.float32)


def test_wav_round_trip_is_exact(tmp_path, stereo):
    path = write_audio(tmp_path / "mix.wav", stereo, 44100)
    audio, rate = read_audio(path, sample_rate=44100, channels=2)
    assert rate == 44100 and audio.dtype == np.float32
    np.testing.assert_array_equal(audio, stereo)  # float wav is lossless
    assert [p.name for p in tmp_path.iterdir()] == ["mix.wav"]  # no temp file left behind


def test_flac_round_trip_within_24_bit(tmp_path, stereo):
    stereo = np.clip(stereo, -0.99, 0.99)  # PCM clips at full scale; stay inside it
    path = write_audio(tmp_path / "mix.flac", stereo, 22050)
    audio, rate = read_audio(path, dtype=np.float64)
    assert rate == 22050 and audio.dtype == np.float64 and audio.shape == stereo.shape
    np.testing.assert_allclose(audio, stereo, atol=2.0**-23)
    assert soundfile.info(str(path)).subtype == "PCM_24"


def test_write_replaces_existing_file(tmp_path, stereo):
    path = tmp_path / "out.wav"
    write_audio(path, stereo, 8000)
    write_audio(path, stereo[:100, :1], 8000, subtype="PCM_16")
    audio, _ = read_audio(path)
    assert audio.shape == (100, 1)


def test_missing_file(tmp_path):
    path = tmp_path / "nothing_here.wav"
    with pytest.raises(JaxsepError, match="no such file") as error:
        read_audio(path)
    assert_one_line_error(error, path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    with pytest.raises(JaxsepError, match="empty") as error:
        read_audio(path)
    assert_one_line_error(error, path)


def test_file_without_samples(tmp_path):
    path = tmp_path / "no_samples.wav"
    soundfile.write(str(path), np.zeros((0, 2), np.float32), 44100)
    with pytest.raises(JaxsepError, match="no audio samples") as error:
        read_audio(path)
    assert_one_line_error(error, path)


def test_truncated_header(tmp_path, stereo):
    full = write_audio(tmp_path / "full.wav", stereo, 44100).read_bytes()
    path = tmp_path / "truncated.wav"
    path.write_bytes(full[:20])  # cut inside the RIFF/fmt header
    with pytest.raises(JaxsepError, match="cannot decode") as error:
        read_audio(path)
    assert_one_line_error(error, path)


def test_container_libsndfile_lacks_is_decoded_through_ffmpeg(tmp_path):
    """An AAC .m4a (what many users hold) goes through the audioread/ffmpeg fallback."""
    tone = np.concatenate([sine(440, 44100, 1.0)[:, :1], sine(1000, 44100, 1.0)[:, 1:]], axis=1)
    wav = write_audio(tmp_path / "tone.wav", tone, 44100)
    m4a = tmp_path / "tone.m4a"
    assert m4a.suffix not in {"." + f.lower() for f in soundfile.available_formats()}
    encode = ["ffmpeg", "-v", "error", "-i", str(wav), "-c:a", "aac", "-b:a", "192k", str(m4a)]
    subprocess.run(encode, check=True)
    audio, rate = read_audio(m4a, sample_rate=44100, channels=2)
    assert rate == 44100 and audio.dtype == np.float32 and audio.shape[1] == 2
    assert abs(len(audio) - len(tone)) <= 4096  # AAC's priming and last frame
    middle = audio[4096:-4096]
    expected_rms = np.sqrt((tone[4096:-4096] ** 2).mean(axis=0))
    np.testing.assert_allclose(np.sqrt((middle**2).mean(axis=0)), expected_rms, rtol=0.02)
    for channel, frequency in ((0, 440), (1, 1000)):
        assert abs(dominant_frequency(middle[:, channel], 44100) - frequency) < 2


@pytest.mark.parametrize("name", ["noise.wav", "noise.flac", "noise.m4a"])
def test_random_bytes(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(np.random.default_rng(1).bytes(5000))
    with pytest.raises(JaxsepError, match="cannot decode") as error:
        read_audio(path)
    assert_one_line_error(error, path)


def test_wrong_channel_count_names_both(tmp_path, stereo):
    path = write_audio(tmp_path / "mono.wav", stereo[:, :1], 44100)
    with pytest.raises(JaxsepError, match="is mono, expected stereo") as error:
        read_audio(path, channels=2)
    assert_one_line_error(error, path)


def test_unexpected_sample_rate_names_both(tmp_path, stereo):
    path = write_audio(tmp_path / "low_rate.wav", stereo, 22050)
    with pytest.raises(JaxsepError, match="22050 Hz, expected 44100 Hz") as error:
        read_audio(path, sample_rate=44100)
    assert_one_line_error(error, path)


def test_read_resamples_when_asked(tmp_path):
    path = write_audio(tmp_path / "tone.wav", sine(440, 22050, 1.0), 22050)
    audio, rate = read_audio(path, sample_rate=44100, resample=True)
    assert rate == 44100 and audio.shape == (44100, 2) and audio.dtype == np.float32
    assert abs(dominant_frequency(audio[:, 0], 44100) - 440) <= 1.0


def test_resample_length_and_frequency():
    tone = sine(1000, 44100, 1.0)
    down = resample(tone, 44100, 16000)
    assert down.shape == (16000, 2) and down.dtype == np.float32
    assert abs(dominant_frequency(down[:, 1], 16000) - 1000) <= 1.0
    odd = resample(tone[:44101], 44100, 16000)  # 44101 * 16000 / 44100 = 16000.36
    assert odd.shape == (16000, 2)
    # A band-limited tone survives down- and up-sampling (edges excluded: filter transients).
    back = resample(down, 16000, 44100)
    np.testing.assert_allclose(back[2000:-2000], tone[2000:-2000], atol=1e-3)


def test_non_finite_file_is_rejected(tmp_path, stereo):
    path = tmp_path / "nan.wav"
    stereo[10, 0] = np.nan
    soundfile.write(str(path), stereo, 8000, subtype="FLOAT")
    with pytest.raises(JaxsepError, match="NaN") as error:
        read_audio(path)
    assert_one_line_error(error, path)


@pytest.mark.parametrize(
    "audio,match",
    [
        (np.array([[0.0], [np.inf]], np.float32), "NaN or infinite"),
        (np.zeros(100, np.float32), r"\[time, channels\]"),
        (np.zeros((2, 44100), np.float32), r"\[time, channels\]"),  # [channels, time] by mistake
        (np.zeros((0, 2), np.float32), r"\[time, channels\]"),
    ],
)
def test_write_rejects_bad_audio(tmp_path, audio, match):
    path = tmp_path / "bad.wav"
    with pytest.raises(JaxsepError, match=match) as error:
        write_audio(path, audio, 44100)
    assert_one_line_error(error, path)
    assert not any(tmp_path.iterdir())


def test_write_rejects_bad_target(tmp_path, stereo):
    for path, match in [
        (tmp_path / "out.mp4", "use .wav or .flac"),
        (tmp_path / "missing" / "out.wav", "does not exist"),
    ]:
        with pytest.raises(JaxsepError, match=match) as error:
            write_audio(path, stereo, 44100)
        assert_one_line_error(error, path)
    with pytest.raises(JaxsepError, match="sample rate") as error:
        write_audio(tmp_path / "rate.wav", stereo, 0)
    assert_one_line_error(error, tmp_path / "rate.wav")

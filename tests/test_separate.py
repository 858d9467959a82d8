"""Chunked separation: seams, exact overlap-add, one compilation, sharding, progress, CLI files."""

import re
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import soundfile

import jaxsep
from jaxsep.cli import main
from jaxsep.errors import JaxsepError
from jaxsep.modeldir import Model, save_model_dir
from jaxsep.models.mask_mlp import MaskMLP
from jaxsep.separate import Separator, crossfade_window, segment_offsets, separate_files

RATE = 8000
MASK_KWARGS = {"num_sources": 2, "n_fft": 256, "hop": 64, "hidden": 16, "num_channels": 2}


class Replicate(nn.Module):
    """Identity-like stand-in: source k is `gains[k] * mixture` (no parameters)."""

    gains: tuple = (1.0, -0.5)

    def separate(self, wave):
        return jnp.stack([g * wave for g in self.gains], axis=1)


def _identity_model(channels=2, sample_rate=RATE, gains=(1.0, -0.5)):
    config = {
        "model": "replicate",
        "sources": [f"s{k}" for k in range(len(gains))],
        "sample_rate": sample_rate,
        "channels": channels,
    }
    return Model(Replicate(gains), {}, config)


@pytest.fixture(scope="module")
def mask_model():
    module = MaskMLP(**MASK_KWARGS)
    variables = module.init(jax.random.key(0), jnp.zeros((1, 1024, 2)))
    config = {"model": "mask_mlp", "sources": ["a", "b"], "sample_rate": RATE, "channels": 2}
    return Model(module, jax.tree.map(np.asarray, variables), config)


def _noise(length, channels=2, seed=0):
    return (0.1 * np.random.default_rng(seed).standard_normal((length, channels))).astype(
        np.float32
    )


def test_matches_full_length_forward_away_from_seams(mask_model):
    # segment 4096, stride 3072 (multiples of the hop, as is length - segment), so every
    # segment's STFT frames lie on the full-length frame grid
    sep = Separator(mask_model, segment=4096 / RATE, overlap=0.25, batch_size=3)
    length = 5 * 4096 + 7 * 64
    audio = _noise(length)
    stems = sep(audio, RATE)
    full = np.asarray(
        mask_model.module.apply(mask_model.variables, jnp.asarray(audio[None]), method="separate")
    )[0]
    offsets = segment_offsets(length, sep.segment, sep.stride)
    assert len(offsets) == 7 and offsets[-1] == length - sep.segment
    margin = 2 * MASK_KWARGS["n_fft"]  # STFT context reaching across a segment edge
    safe = np.ones(length, bool)
    for start in offsets:
        end = start + sep.segment
        if start > 0:
            safe[start : start + margin] = False
        if end < length:
            safe[end - margin : end] = False
    assert 0.5 < safe.mean() < 0.9
    for k, name in enumerate(("a", "b")):
        assert stems[name].shape == (length, 2) and stems[name].dtype == np.float32
        np.testing.assert_allclose(stems[name][safe], full[k][safe], rtol=1e-4, atol=1e-6)
        # the seams really are different (so the comparison above is not vacuous)
        assert np.abs(stems[name][~safe] - full[k][~safe]).max() > 1e-5


@pytest.mark.parametrize(
    ("length", "segment", "overlap"),
    [(10_000, 1000, 0.25), (10_001, 1000, 0.0), (3_333, 1000, 0.9), (700, 1000, 0.25)],
)
def test_identity_model_reconstructs_input_everywhere(length, segment, overlap):
    sep = Separator(_identity_model(), segment=segment / RATE, overlap=overlap, batch_size=2)
    audio = _noise(length, seed=length)
    stems = sep(audio, RATE)
    np.testing.assert_allclose(stems["s0"], audio, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(stems["s1"], -0.5 * audio, rtol=1e-6, atol=1e-7)


def test_crossfade_is_linear_and_positive():
    window = crossfade_window(8)
    np.testing.assert_allclose(window, np.array([1, 2, 3, 4, 4, 3, 2, 1]) / 4)
    assert crossfade_window(5).min() > 0 and crossfade_window(1).tolist() == [1.0]


def test_one_compilation_for_padded_tail_batch_and_other_lengths():
    sep = Separator(_identity_model(), segment=1000 / RATE, overlap=0.25, batch_size=8)
    long_track = _noise(250 * 30 + 1000)  # 11 segments: one full batch + a padded tail of 3
    assert sep.num_segments(len(long_track)) == 11
    np.testing.assert_allclose(sep(long_track, RATE)["s0"], long_track, rtol=1e-6, atol=1e-7)
    sep(_noise(123), RATE)  # shorter than one segment
    sep(_noise(5000), RATE)
    assert sep.trace_count == 1


def test_batch_is_sharded_over_all_devices(monkeypatch):
    assert len(jax.devices()) == 8
    seen = []

    def record_sharding(module, variables, wave):
        jax.debug.inspect_array_sharding(wave, callback=seen.append)
        return module.apply(variables, wave, method="separate")

    # the stand-in's module defines the per-model hook, as jaxsep/models/<name>.py may
    monkeypatch.setattr(
        sys.modules[Replicate.__module__], "separate_waveforms", record_sharding, raising=False
    )
    sep = Separator(_identity_model(), segment=0.125, batch_size=3)
    assert sep.batch_size == 8  # rounded up to a multiple of the device count
    result = sep.run_batch(np.zeros((8, sep.segment, 2), np.float32))
    assert seen and len(seen[0].device_set) == 8  # the model hook ran, on a sharded batch
    assert result.shape == (8, 2, sep.segment, 2)
    assert len(result.sharding.device_set) == 8
    assert {shard.data.shape[0] for shard in result.addressable_shards} == {1}


def test_progress_counts_up_to_total():
    calls = []
    sep = Separator(_identity_model(), segment=1000 / RATE, batch_size=2, devices=jax.devices()[:2])
    sep.progress = lambda done, total: calls.append((done, total))
    length = 9000
    sep(_noise(length), RATE)
    total = sep.num_segments(length)
    assert total == 12
    assert [c[1] for c in calls] == [total] * len(calls)
    done = [c[0] for c in calls]
    assert done == sorted(set(done)) and done[-1] == total and len(calls) == 6


def test_resamples_to_the_model_rate_and_back():
    sep = Separator(_identity_model(), segment=0.5, batch_size=2)
    rate = 16000
    t = np.arange(int(1.3 * rate)) / rate
    tone = 0.5 * np.sin(2 * np.pi * 440 * t).astype(np.float32)
    audio = np.stack([tone, 0.5 * tone], axis=1)
    stems = sep(audio, rate)
    assert stems["s0"].shape == audio.shape
    inner = slice(400, -400)  # the resampler's filter edges
    np.testing.assert_allclose(stems["s0"][inner], audio[inner], atol=2e-3)


def test_channel_rules():
    stereo_model = Separator(_identity_model(channels=2), segment=0.1)
    mono = _noise(1000, channels=1)
    stems = stereo_model(mono, RATE)
    np.testing.assert_allclose(stems["s0"], np.repeat(mono, 2, axis=1), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(stereo_model(mono[:, 0], RATE)["s0"][:, 1], mono[:, 0], atol=1e-7)
    with pytest.raises(JaxsepError, match="3 channel"):
        stereo_model(_noise(1000, channels=3), RATE)
    mono_model = Separator(_identity_model(channels=1), segment=0.1)
    with pytest.raises(JaxsepError, match="2 channel"):
        mono_model(_noise(1000), RATE)
    with pytest.raises(JaxsepError, match="NaN"):
        stereo_model(np.full((100, 2), np.nan, np.float32), RATE)


def test_bad_audio_and_sample_rates_are_one_line_errors():
    sep = Separator(_identity_model(), segment=0.1)
    assert sep(np.ones((100, 2), np.float32), 44100.0)["s0"].shape == (100, 2)  # as musdb gives
    for audio, rate, words in [
        (np.zeros((0, 2), np.float32), RATE, "with samples, got (0, 2)"),
        (np.zeros((10, 2, 1), np.float32), RATE, "with samples, got (10, 2, 1)"),
        (np.array([["a", "b"]]), RATE, "real samples, got dtype <U1"),
        (np.ones((10, 2), np.complex64), RATE, "real samples, got dtype complex64"),
        (np.ones((10, 2), np.float32), 0, "positive integer, got 0"),
        (np.ones((10, 2), np.float32), 44100.5, "positive integer, got 44100.5"),
        (np.ones((10, 2), np.float32), "44100", "positive integer, got '44100'"),
    ]:
        with pytest.raises(JaxsepError) as info:
            sep(audio, rate)
        assert words in str(info.value) and "\n" not in str(info.value)


def test_bad_arguments_are_one_line_errors():
    model = _identity_model()
    for kwargs, words in [
        ({"segment": 0.0}, "segment"),
        ({"overlap": 1.0}, "overlap"),
        ({"batch_size": 0}, "batch size"),
        ({"devices": "tpu"}, "no tpu devices"),
    ]:
        with pytest.raises(JaxsepError, match=words) as info:
            Separator(model, **kwargs)
        assert "\n" not in str(info.value)


# --- CLI -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    module = MaskMLP(**MASK_KWARGS)
    params = module.init(jax.random.key(1), jnp.zeros((1, 1024, 2)))["params"]
    config = {
        "model": "mask_mlp",
        "model_kwargs": MASK_KWARGS,
        "sources": ["a", "b"],
        "sample_rate": 44100,
        "channels": 2,
        "segment": 0.25,
    }
    return save_model_dir(tmp_path_factory.mktemp("models") / "mask", config, {"params": params})


def _write(path, audio, rate):
    soundfile.write(str(path), audio, rate, subtype="FLOAT" if path.suffix == ".wav" else None)
    return path


def _one_line_error(capsys):
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err and "Traceback" not in err
    return err


def test_cli_writes_track_stem_files(model_dir, tmp_path, capsys):
    song = _write(tmp_path / "song.wav", _noise(30_000), 44100)
    voice = _write(tmp_path / "voice.flac", _noise(11_111, channels=1), 22050)
    out = tmp_path / "out"
    argv = ["separate", str(song), str(voice), "--model", str(model_dir), "-o", str(out)]
    assert main(argv + ["--batch-size", "2"]) == 0
    assert "wrote 4 stem files" in capsys.readouterr().out
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == ["song/a.wav", "song/b.wav", "voice/a.wav", "voice/b.wav"]
    for name, frames, rate in [("song", 30_000, 44100), ("voice", 11_111, 22050)]:
        for stem in ("a", "b"):
            info = soundfile.info(str(out / name / f"{stem}.wav"))
            assert (info.frames, info.samplerate, info.channels) == (frames, rate, 2)
    # the files hold what the numpy API returns for the same audio
    expected = Separator(jaxsep.load(model_dir), batch_size=2)(_noise(30_000), 44100)
    for stem in ("a", "b"):
        written_stem, _ = soundfile.read(str(out / "song" / f"{stem}.wav"), dtype="float32")
        assert np.abs(written_stem).max() > 1e-3
        np.testing.assert_array_equal(written_stem, expected[stem])


def test_cli_flac_and_filename_template(model_dir, tmp_path):
    song = _write(tmp_path / "song.wav", _noise(20_000), 44100)
    out = tmp_path / "out"
    argv = ["separate", str(song), "--model", str(model_dir), "-o", str(out), "--ext", "flac"]
    assert main(argv + ["--filename", "{stem}-{track}.{ext}", "--overlap", "0.5"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a-song.flac", "b-song.flac"]
    info = soundfile.info(str(out / "a-song.flac"))
    assert (info.format, info.frames, info.samplerate) == ("FLAC", 20_000, 44100)


def test_library_call_checks_its_arguments_before_loading_the_model(tmp_path):
    song = _write(tmp_path / "song.wav", _noise(1000), 44100)
    for paths, kwargs, words in [
        ([], {}, "no input tracks given"),
        ([song], {"ext": "mp3"}, "--ext 'mp3': use one of wav, flac"),
    ]:
        with pytest.raises(JaxsepError, match=re.escape(words)):
            separate_files(paths, tmp_path / "no_model", tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def _corrupt(path):
    path.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk")
    return path


@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("missing", "no such file"),
        ("corrupt", "cannot decode"),
        ("three_channels", "3 channel"),
        ("bad_model", "model directory not found"),
        ("bad_template", "unknown field"),
        ("template_without_track", "needs {track}"),
        ("template_without_stem", "needs {stem}"),
        ("malformed_template", "malformed template"),
        ("empty", "file is empty (0 bytes)"),
        ("folder", "not a file"),
        ("same_name", "same track name 'good'"),
    ],
)
def test_cli_bad_input_exits_two_and_writes_nothing(model_dir, tmp_path, capsys, case, words):
    inputs = tmp_path / "in"
    inputs.mkdir()
    good = _write(inputs / "good.wav", _noise(5000), 44100)
    bad = {
        "missing": inputs / "nope.wav",
        "corrupt": _corrupt(inputs / "broken.wav"),
        "three_channels": _write(inputs / "surround.wav", _noise(5000, channels=3), 44100),
        "empty": inputs / "empty.wav",
        "folder": inputs / "album.wav",
        "same_name": _write(inputs / "good.flac", _noise(5000), 44100),
    }.get(case, good)
    (inputs / "empty.wav").touch()
    (inputs / "album.wav").mkdir()
    model = tmp_path / "no_model" if case == "bad_model" else model_dir
    out = tmp_path / "out"
    argv = ["separate", str(bad), "--model", str(model), "-o", str(out)]
    if case == "bad_template":
        argv += ["--filename", "{song}/{stem}.{ext}"]
    if case == "template_without_track":
        argv += ["--filename", "{stem}.{ext}"]
    if case == "template_without_stem":
        argv += ["--filename", "{track}.{ext}"]
    if case == "malformed_template":
        argv += ["--filename", "{track/{stem}.{ext}"]
    if case in ("missing", "template_without_track", "empty", "folder", "same_name"):
        argv.insert(1, str(good))  # checked up front: not even the good track is written
    assert main(argv) == 2
    err = _one_line_error(capsys)
    assert words in err
    if case in ("missing", "corrupt", "three_channels", "empty", "folder", "same_name"):
        assert str(bad) in err
    assert not out.exists() or not any(p.is_file() for p in out.rglob("*"))

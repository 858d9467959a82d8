"""Synthetic corpus (`jaxsep synth`): musdb layout, exact mixtures, levels, determinism, errors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import jaxsep.data.synth as synth_module
from jaxsep.cli import main
from jaxsep.data.synth import synthesize_corpus
from jaxsep.errors import JaxsepError

POP_STEMS = ("drums", "bass", "other", "vocals")
CHORALE_STEMS = ("soprano", "alto", "tenor", "bass")
POP_ARGS = {"songs": 3, "seconds": 3.0, "domain": "pop", "seed": 5, "test_fraction": 0.34}


@pytest.fixture(scope="module")
def pop_corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pop") / "corpus"
    stats = synthesize_corpus(out, workers=1, **POP_ARGS)
    assert stats["songs"] == 3 and stats["audio_seconds"] == pytest.approx(9.0)
    assert stats["wall_seconds"] > 0
    return out


@pytest.fixture(scope="module")
def chorale_corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("chorale") / "corpus"
    argv = ["synth", str(out), "--domain", "chorale", "--songs", "1", "--seconds", "4"]
    assert main([*argv, "--seed", "3", "--test-fraction", "0"]) == 0  # through the CLI entry
    return out


def _song_dirs(root: Path) -> list[Path]:
    return sorted(
        (p for subset in ("train", "test") for p in (root / subset).iterdir()), key=lambda p: p.name
    )


def _read(folder: Path, stems) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    mixture, rate = sf.read(folder / "mixture.wav", dtype="float32")
    assert rate == 44100 and mixture.ndim == 2 and mixture.shape[1] == 2
    return mixture, {s: sf.read(folder / f"{s}.wav", dtype="float32")[0] for s in stems}


def _digests(root: Path) -> dict[str, str]:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest() for p in files}


def _centroid(x: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(x.mean(axis=1))) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / 44100)
    return float((spectrum * freqs).sum() / spectrum.sum())


def test_layout_and_split(pop_corpus):
    assert [p.name for p in _song_dirs(pop_corpus)] == [
        "synth_000000",
        "synth_000001",
        "synth_000002",
    ]
    assert sorted(p.name for p in (pop_corpus / "test").iterdir()) == ["synth_000002"]
    for song in _song_dirs(pop_corpus):
        assert sorted(p.name for p in song.iterdir()) == sorted(
            [f"{s}.wav" for s in (*POP_STEMS, "mixture")] + ["meta.json"]
        )  # no sub-folders: musdb's os.walk would take them for tracks
        meta = json.loads((song / "meta.json").read_text())
        assert meta["seed"] == 5 and set(meta["soundfonts"]) == set(POP_STEMS)
    assert not list(pop_corpus.parent.glob("*.partial-*"))


def test_musdb_reads_pop_corpus(pop_corpus):
    import musdb

    db = musdb.DB(root=str(pop_corpus), is_wav=True)
    assert len(db) == 3
    track = db[0]
    assert track.rate == 44100 and track.audio.shape == (3 * 44100, 2)
    assert {"vocals", "drums", "bass", "other", "accompaniment"} <= set(track.targets)
    summed = sum(track.sources[s].audio for s in POP_STEMS)
    assert np.abs(track.audio - summed).max() < 1e-6
    valid = musdb.DB(
        root=str(pop_corpus), is_wav=True, subsets="train", split="valid", setup_file="synth.yaml"
    )
    assert [t.name for t in valid] == ["synth_000001"]  # last ~10% of train


def test_musdb_reads_chorale_corpus(chorale_corpus):
    import musdb

    db = musdb.DB(root=str(chorale_corpus), is_wav=True, setup_file="chorales.yaml")
    assert len(db) == 1
    track = db[0]
    assert track.rate == 44100 and track.audio.shape == (4 * 44100, 2)
    assert set(track.sources) == set(CHORALE_STEMS)
    assert track.name.startswith("bwv")
    summed = sum(track.sources[s].audio for s in CHORALE_STEMS)
    assert np.abs(track.audio - summed).max() < 1e-6


@pytest.mark.parametrize("which", ["pop", "chorale"])
def test_mixture_is_sum_and_levels_are_sane(which, pop_corpus, chorale_corpus):
    root, stems = (pop_corpus, POP_STEMS) if which == "pop" else (chorale_corpus, CHORALE_STEMS)
    for song in _song_dirs(root):
        mixture, sources = _read(song, stems)
        assert np.abs(mixture - sum(sources.values())).max() < 1e-6
        assert np.abs(mixture).max() <= 0.95 + 1e-3
        for name, x in sources.items():
            assert x.shape == mixture.shape
            assert np.abs(x).max() < 0.99, f"{song.name}/{name} clipped"
            frames = np.sqrt(
                (x.mean(axis=1)[: len(x) // 2205 * 2205].reshape(-1, 2205) ** 2).mean(1)
            )
            active = (frames > 10 ** (-55 / 20)).mean()
            assert active > 0.5, f"{song.name}/{name} mostly silent ({active:.2f})"


def test_stems_are_different_instruments(pop_corpus, chorale_corpus):
    for song in _song_dirs(pop_corpus):
        _, s = _read(song, POP_STEMS)
        assert _centroid(s["bass"]) < min(_centroid(s["drums"]), _centroid(s["vocals"]))
        corr = np.corrcoef([s[k].mean(axis=1) for k in POP_STEMS])
        assert np.abs(corr[np.triu_indices(4, 1)]).max() < 0.5
    _, s = _read(_song_dirs(chorale_corpus)[0], CHORALE_STEMS)
    assert _centroid(s["bass"]) < _centroid(s["soprano"])


def test_same_seed_same_bytes_for_any_worker_count(pop_corpus, tmp_path):
    again = tmp_path / "again"
    synthesize_corpus(again, workers=2, **POP_ARGS)
    assert _digests(again) == _digests(pop_corpus)


def test_different_seed_gives_different_audio(pop_corpus, tmp_path):
    other = tmp_path / "other"
    synthesize_corpus(other, **{**POP_ARGS, "songs": 1, "seed": 6, "test_fraction": 0.0})
    a, _ = _read(pop_corpus / "train" / "synth_000000", POP_STEMS)
    b, _ = _read(other / "train" / "synth_000000", POP_STEMS)
    assert a.shape == b.shape and np.abs(a - b).mean() > 1e-3


def test_existing_corpus_is_replaced(tmp_path):
    out = tmp_path / "c"
    synthesize_corpus(out, songs=1, seconds=1.0, domain="pop", seed=1, workers=1, test_fraction=0)
    synthesize_corpus(out, songs=2, seconds=1.0, domain="pop", seed=1, workers=1, test_fraction=0)
    assert len(list((out / "train").iterdir())) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]  # no partial or old folders left


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"songs": 0}, "--songs"),
        ({"seconds": 0.0}, "--seconds"),
        ({"seconds": -1.0, "domain": "chorale"}, "--seconds"),
        ({"workers": 0}, "--workers"),
        ({"test_fraction": 1.5}, "--test-fraction"),
        ({"seed": -1}, "--seed"),
        ({"domain": "jazz"}, "domain"),
        ({"soundfonts": ["NoSuchFont.sf2"]}, "install libfluidsynth3"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, kwargs, message):
    args = {
        "songs": 1,
        "seconds": 1.0,
        "domain": "pop",
        "seed": 0,
        "workers": 1,
        "test_fraction": 0,
    }
    with pytest.raises(JaxsepError) as info:
        synthesize_corpus(tmp_path / "out", **{**args, **kwargs})
    assert message in str(info.value) and "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_refuses_non_corpus_folder(tmp_path):
    (tmp_path / "keep.txt").write_text("user data")
    with pytest.raises(JaxsepError, match="not a jaxsep synth corpus"):
        synthesize_corpus(
            tmp_path, songs=1, seconds=1.0, domain="pop", seed=0, workers=1, test_fraction=0
        )
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_failure_midway_leaves_nothing(tmp_path, monkeypatch):
    real = synth_module._render_job

    def fail_on_second(job):
        if job["index"] == 1:
            raise JaxsepError("boom")
        return real(job)

    monkeypatch.setattr(synth_module, "_render_job", fail_on_second)
    with pytest.raises(JaxsepError, match="boom"):
        synthesize_corpus(
            tmp_path / "out", songs=2, seconds=1.0, domain="pop", seed=0, workers=1, test_fraction=0
        )
    assert list(tmp_path.iterdir()) == []


def test_cli_bad_input_exits_2_with_one_line(tmp_path, capsys):
    assert main(["synth", str(tmp_path / "out"), "--songs", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--songs" in err
    assert list(tmp_path.iterdir()) == []


def test_formant_singer_sings_the_pitch_full_band():
    from jaxsep.data.synth_voice import sing

    notes = [(0.1, 1.0, 57, 100)]  # A3 = 220 Hz
    a = sing(notes, 1.5, "male", np.random.default_rng(0))
    assert a.shape == (int(1.5 * 44100), 2) and np.isfinite(a).all()
    assert np.array_equal(a, sing(notes, 1.5, "male", np.random.default_rng(0)))
    x = a[int(0.5 * 44100) : int(1.0 * 44100), 0].astype(np.float64)
    x -= x.mean()
    corr = np.correlate(x, x, "full")[len(x) - 1 :]
    lag = 100 + int(np.argmax(corr[100:400]))  # period search between 110 and 441 Hz
    assert 44100 / lag == pytest.approx(220.0, rel=0.05)
    spectrum = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / 44100)
    assert spectrum[freqs > 5000].sum() / spectrum.sum() > 1e-5  # not band-limited like espeak

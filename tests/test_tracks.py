"""Track sources: windows read from disk, stem grouping, MUSDB/Frets-on-Fire layouts, bad input."""

from pathlib import Path

import ml_collections
import numpy as np
import pytest
import soundfile as sf

from jaxsep.data.tracks import (
    FretsOnFireSource,
    MusdbSource,
    StemFolderSource,
    validation_source_from_config,
)
from jaxsep.errors import JaxsepError

SR = 44100
MUSDB = ("drums", "bass", "other", "vocals")


def stem_audio(track: int, stem: int, frames: int, channels: int = 2) -> np.ndarray:
    """Content that names its track, stem and frame: ch0 = frame * 1e-5, ch1 = a track/stem code."""
    ramp = np.arange(frames) * 1e-5
    code = np.full(frames, 0.1 * (track + 1) + 0.01 * (stem + 1))
    return np.stack([ramp, code][:channels], axis=1).astype(np.float32)


def write_song(folder: Path, track: int, stems, frames: int = SR * 2, ext: str = "wav", sr=SR):
    folder.mkdir(parents=True, exist_ok=True)
    for s, name in enumerate(stems):
        fmt = {"wav": dict(subtype="FLOAT"), "ogg": dict(format="OGG", subtype="VORBIS")}[ext]
        sf.write(folder / f"{name}.{ext}", stem_audio(track, s, frames), sr, **fmt)


def one_line_error(call) -> str:
    with pytest.raises(JaxsepError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    return message


def test_stem_folder_reads_the_requested_window(tmp_path):
    for k in range(2):
        write_song(tmp_path / f"song{k}", k, MUSDB)
    source = StemFolderSource(tmp_path, stems=MUSDB)
    assert len(source) == 2 and source.names == ("song0", "song1")
    assert source.stems == MUSDB and source.sample_rate == SR and source.channels == 2
    assert source.num_frames(1) == SR * 2
    window = source.read(1, "bass", 1000, 256)
    assert window.dtype == np.float32 and window.shape == (256, 2)
    np.testing.assert_allclose(window, stem_audio(1, 1, SR * 2)[1000:1256], rtol=1e-7)
    tail = source.read(0, "drums", SR * 2 - 10, 30)  # past the end: zero padded
    np.testing.assert_allclose(tail[:10], stem_audio(0, 0, SR * 2)[-10:], rtol=1e-7)
    assert np.all(tail[10:] == 0)
    mixture = source.read_mixture(0, 50, 100)  # no mixture file: the sum of the stems
    expected = sum(stem_audio(0, s, SR * 2)[50:150] for s in range(4))
    np.testing.assert_allclose(mixture, expected, rtol=1e-6)


def test_grouping_sums_file_stems(tmp_path):
    write_song(tmp_path / "a", 0, ("soprano", "alto", "tenor", "bass"))
    grouping = {"female": ["soprano", "alto"], "male": ["tenor", "bass"]}
    source = StemFolderSource(tmp_path, grouping=grouping)
    assert source.stems == ("female", "male")
    full = [stem_audio(0, s, SR * 2)[10:110] for s in range(4)]
    np.testing.assert_allclose(source.read(0, "female", 10, 100), full[0] + full[1], rtol=1e-6)
    np.testing.assert_allclose(source.read(0, "male", 10, 100), full[2] + full[3], rtol=1e-6)


def test_bach10_style_names_drop_the_folder_prefix(tmp_path):
    folder = tmp_path / "01-AchGottundHerr"
    write_song(folder, 0, ["01-AchGottundHerr-violin", "01-AchGottundHerr-bassoon"])
    sf.write(folder / "01-AchGottundHerr.wav", stem_audio(3, 3, SR), SR, subtype="FLOAT")
    source = StemFolderSource(tmp_path)
    assert source.stems == ("bassoon", "violin")
    np.testing.assert_allclose(source.read_mixture(0, 0, 20), stem_audio(3, 3, SR)[:20], rtol=1e-7)


def test_unknown_grouping_stem_names_the_folder(tmp_path):
    write_song(tmp_path / "song", 0, MUSDB)
    grouping = {"accompaniment": ["drums", "bass", "piano"], "vocals": ["vocals"]}
    message = one_line_error(lambda: StemFolderSource(tmp_path, grouping=grouping))
    assert str(tmp_path / "song") in message and "piano" in message


def test_missing_stem_names_the_folder(tmp_path):
    write_song(tmp_path / "full", 0, MUSDB)
    write_song(tmp_path / "partial", 1, MUSDB[:3])
    message = one_line_error(lambda: StemFolderSource(tmp_path, stems=MUSDB))
    assert str(tmp_path / "partial") in message and "vocals" in message


def test_wrong_sample_rate_or_channels_names_the_file(tmp_path):
    write_song(tmp_path / "a", 0, MUSDB)
    write_song(tmp_path / "b", 1, MUSDB, sr=22050)
    message = one_line_error(lambda: StemFolderSource(tmp_path))
    assert str(tmp_path / "b") in message and "22050" in message
    for name in MUSDB:
        sf.write(tmp_path / "b" / f"{name}.wav", stem_audio(1, 0, SR, channels=1), SR)
    message = one_line_error(lambda: StemFolderSource(tmp_path))
    assert str(tmp_path / "b") in message and "channels" in message


def test_frets_on_fire_backing_is_song_plus_rhythm(tmp_path):
    write_song(tmp_path / "Artist - One", 0, ("guitar", "song", "rhythm"), frames=SR, ext="ogg")
    write_song(tmp_path / "Artist - Two", 1, ("guitar", "song"), frames=SR, ext="ogg")
    source = FretsOnFireSource(tmp_path)
    assert source.stems == ("guitar", "backing") and len(source) == 2
    folder = tmp_path / "Artist - One"
    song, _ = sf.read(folder / "song.ogg", dtype="float32")
    rhythm, _ = sf.read(folder / "rhythm.ogg", dtype="float32")
    guitar, _ = sf.read(folder / "guitar.ogg", dtype="float32")
    np.testing.assert_allclose(source.read(0, "backing", 500, 300), (song + rhythm)[500:800])
    np.testing.assert_allclose(source.read(0, "guitar", 500, 300), guitar[500:800])
    song2, _ = sf.read(tmp_path / "Artist - Two" / "song.ogg", dtype="float32")
    np.testing.assert_allclose(source.read(1, "backing", 0, 100), song2[:100])
    (tmp_path / "Artist - Two" / "guitar.ogg").unlink()
    message = one_line_error(lambda: FretsOnFireSource(tmp_path))
    assert "Artist - Two" in message and "guitar" in message


def write_musdb(root: Path, valid=("song2",)) -> None:
    for subset, names in (("train", ("song0", "song1", "song2")), ("test", ("song3",))):
        for name in names:
            k = int(name[-1])
            write_song(root / subset / name, k, MUSDB)
            mix = sum(stem_audio(k, s, SR * 2) for s in range(4))
            sf.write(root / subset / name / "mixture.wav", mix, SR, subtype="FLOAT")
    import musdb

    setup = (Path(musdb.__path__[0]) / "configs" / "mus.yaml").read_text()
    setup = setup.split("validation_tracks:")[0] + "validation_tracks:\n"
    setup += "".join(f"  - {v}\n" for v in valid)
    (root / "setup.yaml").write_text(setup)


def test_musdb_source_splits_and_targets(tmp_path):
    write_musdb(tmp_path)
    train = MusdbSource(tmp_path, subset="train", split="train", setup_file="setup.yaml")
    valid = MusdbSource(tmp_path, subset="train", split="valid", setup_file="setup.yaml")
    test = MusdbSource(tmp_path, subset="test", stems=("vocals", "accompaniment"))
    assert train.names == ("song0", "song1") and valid.names == ("song2",)
    import musdb  # the same tracks and split as musdb's own listing

    for split, source in (("train", train), ("valid", valid)):
        db = musdb.DB(str(tmp_path), "setup.yaml", True, subsets="train", split=split)
        assert source.names == tuple(t.name for t in db.tracks)
    (tmp_path / "train" / ".ipynb_checkpoints").mkdir()  # a hidden folder is not a track
    assert MusdbSource(tmp_path, subset="train").names == ("song0", "song1", "song2")
    assert test.names == ("song3",) and test.stems == ("vocals", "accompaniment")
    assert train.stems == MUSDB and train.sample_rate == SR and train.num_frames(0) == SR * 2
    full = [stem_audio(3, s, SR * 2)[100:200] for s in range(4)]
    np.testing.assert_allclose(test.read(0, "vocals", 100, 100), full[3], rtol=1e-7)
    np.testing.assert_allclose(
        test.read(0, "accompaniment", 100, 100), full[0] + full[1] + full[2], rtol=1e-6
    )
    np.testing.assert_allclose(test.read_mixture(0, 100, 100), sum(full), rtol=1e-6)
    (tmp_path / "train" / "song1" / "bass.wav").unlink()
    message = one_line_error(lambda: MusdbSource(tmp_path, subset="train"))
    assert str(tmp_path / "train" / "song1") in message and "bass" in message


def test_folder_source_errors_name_the_folder_or_file(tmp_path):
    message = one_line_error(lambda: StemFolderSource(tmp_path / "nope"))
    assert str(tmp_path / "nope") in message and "not a folder" in message
    (tmp_path / "notes.txt").write_text("no audio here")
    message = one_line_error(lambda: StemFolderSource(tmp_path))
    assert str(tmp_path) in message and "no folders of" in message
    write_song(tmp_path / "song", 0, MUSDB)
    sf.write(tmp_path / "song" / "vocals.flac", stem_audio(0, 3, SR), SR)
    message = one_line_error(lambda: StemFolderSource(tmp_path))
    assert str(tmp_path / "song") in message and "vocals.flac" in message
    (tmp_path / "song" / "vocals.flac").unlink()
    (tmp_path / "song" / "bass.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    message = one_line_error(lambda: StemFolderSource(tmp_path))
    assert str(tmp_path / "song" / "bass.wav") in message and "cannot read" in message


def test_windows_past_the_end_are_silent_and_unknown_stems_are_named(tmp_path):
    write_song(tmp_path / "song", 0, MUSDB, frames=100)
    source = StemFolderSource(tmp_path)
    window = source.read(0, "drums", 500, 64)
    assert window.shape == (64, 2) and not window.any()
    message = one_line_error(lambda: source.read(0, "piano", 0, 10))
    assert str(tmp_path / "song") in message and "piano" in message


def test_malformed_musdb_setup_files_are_one_line_errors(tmp_path):
    write_musdb(tmp_path)
    cases = {
        "sources: [unclosed\n": "not valid YAML (line 2",
        "- a list\n": "must be a mapping",
        "mixture: mixture.wav\nsources: {}\ntargets: {}\n": "has no 'stem_ids'",
        "mixture: m.wav\nsources: [a]\ntargets: {}\nstem_ids: {}\n": "'sources' must be a mapping",
        "mixture: m.wav\nsources: {a: a.wav}\ntargets: {}\nstem_ids: {mixture: 0}\n": "lacks a",
    }
    for k, (text, expected) in enumerate(cases.items()):
        (tmp_path / f"bad{k}.yaml").write_text(text)
        message = one_line_error(lambda k=k: MusdbSource(tmp_path, setup_file=f"bad{k}.yaml"))
        assert str(tmp_path / f"bad{k}.yaml") in message and expected in message, message
    message = one_line_error(lambda: MusdbSource(tmp_path, setup_file="missing.yaml"))
    assert "missing.yaml" in message and "not found" in message
    message = one_line_error(lambda: MusdbSource(tmp_path, stems=("vocals", "piano")))
    assert "piano" in message and "neither a musdb source nor a target" in message
    setup = (
        (tmp_path / "setup.yaml")
        .read_text()
        .replace("  accompaniment:\n    bass: 1", "  accompaniment:\n    piano: 1")
    )
    (tmp_path / "piano.yaml").write_text(setup)
    message = one_line_error(
        lambda: MusdbSource(tmp_path, setup_file="piano.yaml", stems=("accompaniment",))
    )
    assert "piano, not a source" in message
    message = one_line_error(lambda: MusdbSource(tmp_path, subset="test", split="valid"))
    assert str(tmp_path / "test") in message and "train subset only" in message


def test_an_empty_validation_list_means_every_train_track_trains(tmp_path):
    write_musdb(tmp_path, valid=())  # `validation_tracks:` with no entries (YAML null)
    train = MusdbSource(tmp_path, subset="train", split="train", setup_file="setup.yaml")
    assert train.names == ("song0", "song1", "song2")
    message = one_line_error(
        lambda: MusdbSource(tmp_path, subset="train", split="valid", setup_file="setup.yaml")
    )
    assert "split=valid" in message and "no tracks found" in message
    data = ml_collections.ConfigDict(
        {"root": str(tmp_path), "setup_file": "setup.yaml", "stems": list(MUSDB)}
    )
    assert validation_source_from_config(data).names == ("song3",)  # falls back to the test set
    data.root = ""
    message = one_line_error(lambda: validation_source_from_config(data))
    assert "--data ROOT" in message

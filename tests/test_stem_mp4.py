"""MUSDB18 as it ships (one ``.stem.mp4`` per track): found, decoded window by window with the
right stream at the right offset, evaluated, and bad files named in one line."""

import json
import shutil
import subprocess
import threading
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import soundfile as sf
import soxr
import stempeg

import jaxsep
from jaxsep.audio import streams
from jaxsep.audio.streams import probe_streams, read_stream_window, read_streams_window
from jaxsep.cli import main
from jaxsep.data.synth import synthesize_corpus
from jaxsep.data.tracks import MusdbSource, StemFolderSource
from jaxsep.errors import JaxsepError
from jaxsep.modeldir import save_model_dir
from jaxsep.models.mask_mlp import MaskMLP

SR = 44100
STEMS = ("drums", "bass", "other", "vocals")


@pytest.fixture(scope="module")
def write_stem_mp4(load_tool):
    """`write_stem_mp4(path, stems)`: MUSDB18's layout, stream 0 the mixture, then the stems in
    `stem_ids` order; the benchmark's writer (AAC without noise substitution, so that the
    window tests can be exact)."""
    writer = load_tool("bench_stem_reads").write_stem_mp4

    def write(path: Path, stems: np.ndarray) -> None:
        writer(path, np.concatenate([stems.sum(0, keepdims=True), stems]), SR)

    return write


def stem_signal(track: int, stem: int, frames: int) -> np.ndarray:
    """Stereo chirps, different for every track and stem (so a wrong stream or offset shows)."""
    t = np.arange(frames) / SR
    f0, f1 = 100.0 + 70 * stem + 13 * track, 1500.0 + 400 * stem
    phase = f0 * t + (f1 - f0) * t**2 / (2 * t[-1])
    return 0.2 * np.stack([np.sin(2 * np.pi * phase), np.cos(2 * np.pi * 1.01 * phase)], 1)


def write_musdb18(root: Path, write_stem_mp4, frames: int = SR * 3) -> dict[str, np.ndarray]:
    songs = {}
    for subset, names in (("train", ("song0", "song1")), ("test", ("song2",))):
        for name in names:
            k = int(name[-1])
            songs[name] = np.stack([stem_signal(k, s, frames) for s in range(len(STEMS))])
            write_stem_mp4(root / subset / f"{name}.stem.mp4", songs[name])
    return songs


@pytest.fixture(scope="module")
def musdb18(tmp_path_factory, write_stem_mp4) -> tuple[Path, dict[str, np.ndarray]]:
    root = tmp_path_factory.mktemp("musdb18")
    return root, write_musdb18(root, write_stem_mp4)


def full_decode(path: Path, stream: int) -> np.ndarray:
    """The whole stream decoded from the start by stempeg (musdb's own reader)."""
    audio, _ = stempeg.read_stems(str(path), stem_id=stream, dtype=np.float32)
    return audio


def snr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(reference**2) / np.sum((reference - estimate) ** 2)))


def one_line_error(call) -> str:
    with pytest.raises(JaxsepError) as info:
        call()
    assert "\n" not in str(info.value)
    return str(info.value)


def test_stem_mp4_tracks_are_found_and_read_from_the_right_stream(musdb18):
    root, songs = musdb18
    (root / "train" / ".ipynb_checkpoints").mkdir(exist_ok=True)  # not a track folder
    train = MusdbSource(root, subset="train")  # layout told from the files
    assert train.names == ("song0", "song1") and train.stems == STEMS
    import musdb

    assert train.names == tuple(t.name for t in musdb.DB(str(root), subsets="train").tracks)
    assert train.sample_rate == SR and train.channels == 2
    assert train.num_frames(1) == SR * 3 and train.track(1).folder.name == "song1.stem.mp4"
    for s, stem in enumerate(STEMS):  # each stem is its own stream, coded close to the original
        decoded = train.read(1, stem, 0, SR * 3)
        assert snr_db(songs["song1"][s], decoded) > 20
        assert snr_db(songs["song1"][(s + 1) % 4], decoded) < 0
    mixture = train.read_mixture(1, 0, SR * 3)  # stream 0, not the sum of the stems
    expected = full_decode(root / "train" / "song1.stem.mp4", 0)  # + AAC's padding at the end
    np.testing.assert_array_equal(mixture, expected[: SR * 3])
    test = MusdbSource(root, subset="test", stems=("vocals", "accompaniment"))
    parts = MusdbSource(root, subset="test")
    accompaniment = sum(parts.read(0, stem, 0, SR) for stem in STEMS[:3])
    np.testing.assert_allclose(test.read(0, "accompaniment", 0, SR), accompaniment, rtol=1e-6)


def test_the_stems_of_an_excerpt_are_decoded_in_one_ffmpeg_call(musdb18, monkeypatch):
    """Starting ffmpeg costs more than decoding an excerpt: the four stems of one window come
    from one call (streams merged), the same samples as four single-stream reads."""
    import pickle

    root, _ = musdb18
    source = MusdbSource(root, subset="train")
    refs = probe_streams(root / "train" / "song1.stem.mp4")
    calls = []
    run = streams.subprocess.run
    monkeypatch.setattr(
        streams.subprocess, "run", lambda cmd, **kw: calls.append(cmd) or run(cmd, **kw)
    )
    windows = [source.read(1, stem, 5000, 3000) for stem in STEMS]
    assert len(calls) == 1 and "amerge=inputs=4" in " ".join(calls[0])
    monkeypatch.undo()
    for k, window in enumerate(windows):
        np.testing.assert_array_equal(window, read_stream_window(refs[k + 1], 5000, 3000))
    monkeypatch.setattr(
        streams.subprocess, "run", lambda cmd, **kw: calls.append(cmd) or run(cmd, **kw)
    )
    source.read(1, "bass", 5001, 3000)  # another window: decoded anew
    assert len(calls) == 2
    source.read(0, "bass", 0, 31 * SR)  # whole-track reads (evaluation) are not kept
    source.read(0, "bass", 0, 31 * SR)
    assert len(calls) == 4 and "amerge" not in " ".join(calls[-1])
    # grain reads batches in threads: another thread's excerpt read in between evicts nothing
    before, read_drums, go_on = len(calls), threading.Event(), threading.Event()

    def other_thread():
        source.read(1, "drums", 100, 3000)
        read_drums.set()
        go_on.wait(timeout=60)
        source.read(1, "vocals", 100, 3000)

    thread = threading.Thread(target=other_thread)
    thread.start()
    read_drums.wait(timeout=60)
    source.read(1, "drums", 200, 3000)
    go_on.set()
    thread.join()
    assert len(calls) == before + 2  # one decode per excerpt, not 3
    assert pickle.loads(pickle.dumps(source))._stream_windows == {}  # nothing stale to workers
    other = probe_streams(root / "train" / "song0.stem.mp4")[1]
    with pytest.raises(ValueError, match="streams of one file"):
        read_streams_window([refs[1], other], 0, 10)


@pytest.mark.parametrize("start", [0, 700, 1024, 3 * SR // 2 + 17, 3 * SR - 1000])
def test_windows_match_a_decode_from_the_start(musdb18, start):
    """Input-side seeking lands on the right sample, and the pre-roll makes the first AAC frames
    of a window decode exactly as in a decode from the start (without it they are off by up to
    0.26 on these chirps)."""
    root, _ = musdb18
    path = root / "train" / "song0.stem.mp4"
    ref = probe_streams(path)[2]
    window = read_stream_window(ref, start, 4096)
    expected = full_decode(path, 2)[start : start + 4096]
    np.testing.assert_array_equal(window[: len(expected)], expected)
    assert window.shape == (4096, 2) and window.dtype == np.float32
    assert not window[len(expected) :].any()  # past the end: silence, as for WAV files


def test_a_folder_source_takes_stem_mp4_tracks_in_musdb_order(musdb18):
    """The ChimeraNet recipe's folder source: ``.stem.mp4`` files are tracks (streams named as
    musdb's default setup names them), read like `MusdbSource` reads them."""
    from jaxsep.recipes import chimera_transfer as recipe

    root, songs = musdb18
    folder = StemFolderSource(root, stems=STEMS)
    assert folder.names == ("test/song2", "train/song0", "train/song1")
    musdb = MusdbSource(root, subset="train")
    for stem in STEMS:
        np.testing.assert_array_equal(
            folder.read(2, stem, 500, 1000), musdb.read(1, stem, 500, 1000)
        )
    np.testing.assert_array_equal(folder.read_mixture(1, 0, 100), musdb.read_mixture(0, 0, 100))
    config = recipe.default_config()
    config.data.root = str(root)
    source = recipe.build_source(config, "train")  # vocals / accompaniment, mono, 16 kHz
    assert len(source) == 2 and source.stems == ("vocals", "accompaniment")
    vocals = source.read(1, "vocals", 0, 16000)[:, 0]
    expected = soxr.resample(songs["song1"][3].mean(1), SR, 16000)[:16000]
    assert snr_db(expected, vocals) > 15


def test_bad_stem_mp4_files_are_one_line_errors(tmp_path, monkeypatch, write_stem_mp4, load_tool):
    corrupt = tmp_path / "corrupt" / "train" / "junk.stem.mp4"
    corrupt.parent.mkdir(parents=True)
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"junk" * 100)
    message = one_line_error(lambda: MusdbSource(tmp_path / "corrupt"))
    assert str(corrupt) in message

    short = tmp_path / "short" / "train" / "three.stem.mp4"
    write_stem_mp4(short, np.stack([stem_signal(0, s, SR) for s in range(2)]))  # 3 streams
    message = one_line_error(lambda: MusdbSource(tmp_path / "short"))
    assert str(short) in message and "no audio stream 3 for 'other'" in message
    source = MusdbSource(tmp_path / "short", stems=("drums", "bass"))  # only the asked streams
    assert source.stems == ("drums", "bass") and len(source) == 1

    other_rate = tmp_path / "rates" / "train" / "b.stem.mp4"
    write_stem_mp4(
        other_rate.with_name("a.stem.mp4"), np.stack([stem_signal(0, s, SR) for s in range(4)])
    )
    load_tool("bench_stem_reads").write_stem_mp4(other_rate, np.zeros((5, 22050, 2)), 22050)
    message = one_line_error(lambda: MusdbSource(tmp_path / "rates"))
    assert f"{other_rate} [audio stream 2]: sample rate 22050 Hz differs from 44100 Hz" in message

    video = tmp_path / "video.stem.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "color=size=16x16:duration=0.1",
         "-c:v", "mpeg4", str(video)], check=True,
    )  # fmt: skip
    message = one_line_error(lambda: probe_streams(video))
    assert str(video) in message and "no audio streams" in message
    message = one_line_error(lambda: probe_streams(tmp_path / "gone.stem.mp4"))
    assert "gone.stem.mp4: no such file" in message
    # a time base other than 1/rate (Matroska: 1/1000): frames from the duration
    stream = {"sample_rate": "48000", "channels": 2, "time_base": "1/1000", "duration": "2.5"}
    assert streams._stream_ref(video, 0, stream).frames == 120_000

    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))
    message = one_line_error(lambda: probe_streams(short))
    assert str(short) in message and "ffprobe not found" in message


@pytest.fixture(scope="module")
def corpora(tmp_path_factory, write_stem_mp4) -> tuple[Path, Path]:
    """One synthetic corpus twice: MUSDB18-HQ layout (WAV folders) and MUSDB18 (``.stem.mp4``)."""
    hq = tmp_path_factory.mktemp("hq") / "corpus"
    synthesize_corpus(hq, songs=3, seconds=2, domain="pop", seed=1, test_fraction=0.34)
    stems_root = tmp_path_factory.mktemp("stems") / "corpus"
    for subset in ("train", "test"):
        for folder in sorted((hq / subset).iterdir()):
            audio = np.stack([sf.read(folder / f"{s}.wav", dtype="float32")[0] for s in STEMS])
            write_stem_mp4(stems_root / subset / f"{folder.name}.stem.mp4", audio)
    shutil.copy(hq / "synth.yaml", stems_root / "synth.yaml")
    return hq, stems_root


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    kwargs = {"num_sources": 4, "n_fft": 512, "hop": 128, "hidden": 16, "num_channels": 2}
    params = MaskMLP(**kwargs).init(jax.random.key(0), jnp.zeros((1, 1024, 2)))["params"]
    config = {"model": "mask_mlp", "model_kwargs": kwargs, "sources": list(STEMS)}
    config |= {"sample_rate": SR, "channels": 2}
    return save_model_dir(tmp_path_factory.mktemp("model") / "mask", config, {"params": params})


def test_evaluate_scores_a_stem_mp4_dataset(corpora, model, tmp_path, capsys):
    """`jaxsep evaluate --data MUSDB18`: the same track as HQ WAVs and as ``.stem.mp4`` scores
    within the AAC coding error of each other."""
    hq, stems_root = corpora
    summaries = {}
    for name, root in (("hq", hq), ("stems", stems_root)):
        out = tmp_path / f"eval-{name}"
        argv = ["evaluate", "--model", str(model), "--data", str(root), "-o", str(out)]
        assert main(argv + ["--segment", "0.5", "--baseline"]) == 0
        summaries[name] = json.loads((out / "summary.json").read_text())
    assert summaries["stems"]["tracks"] == summaries["hq"]["tracks"]
    for method in ("model", "mixture"):
        for stem in STEMS:
            hq_sdr = summaries["hq"]["median"][method][stem]["SDR"]
            stems_sdr = summaries["stems"]["median"][method][stem]["SDR"]
            assert abs(hq_sdr - stems_sdr) < 1.0, (method, stem, hq_sdr, stems_sdr)
    empty = tmp_path / "empty"
    (empty / "test").mkdir(parents=True)
    assert main(["evaluate", "--model", str(model), "--data", str(empty)]) == 2
    assert "no tracks found" in capsys.readouterr().err


def test_separate_reads_the_mixture_stream_and_names_outputs_like_musdb(corpora, model, tmp_path):
    _, stems_root = corpora
    (track,) = sorted((stems_root / "test").glob("*.stem.mp4"))
    out = tmp_path / "out"
    argv = ["separate", str(track), "--model", str(model), "-o", str(out), "--segment", "1"]
    assert main(argv) == 0
    name = track.name.removesuffix(".stem.mp4")
    assert sorted(p.name for p in (out / name).iterdir()) == sorted(f"{s}.wav" for s in STEMS)
    mixture = probe_streams(track)[0]  # stream 0, decoded in float32
    expected = jaxsep.Separator(jaxsep.load(model), segment=1.0)(
        read_stream_window(mixture, 0, mixture.frames), SR
    )
    for stem in STEMS:
        written, rate = sf.read(out / name / f"{stem}.wav", dtype="float32")
        assert rate == SR and written.shape == (mixture.frames, 2)
        np.testing.assert_array_equal(written, expected[stem])


def test_train_reads_a_stem_mp4_dataset(corpora, tmp_path):
    """The grain workers decode ``.stem.mp4`` windows; training and validation both run."""
    _, stems_root = corpora
    workdir = tmp_path / "run"
    argv = ["train", "--config", "configs/mask_demo.py:tiny", "--workdir", str(workdir)]
    assert main(argv + ["--data", str(stems_root), "--config.data.setup_file=synth.yaml"]) == 0
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if r["split"] == "eval"]
    assert [r["step"] for r in evals] == [3, 6] and all(np.isfinite(r["loss"]) for r in evals)
    assert (workdir / "model" / "config.json").is_file()


def test_pipeline_bench_times_a_stem_mp4_corpus(musdb18, tmp_path, capsys):
    """`jaxsep bench pipeline --data ROOT`: the user's own corpus, named in records and table."""
    root, _ = musdb18
    out = tmp_path / "pipeline.jsonl"
    argv = ["bench", "pipeline", "--size", "tiny", "--workers", "0", "--data", str(root)]
    assert main(argv + ["-o", str(out)]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert {r["pipeline"] for r in records} == {"xumx", "chimera"}
    assert all(r["corpus"] == str(root) and r["examples_per_s"] > 0 for r in records)
    assert f"| xumx | {root} | tiny | 2 | off | 0 |" in capsys.readouterr().out


def test_read_speed_tool_writes_a_record_the_table_renders(run_record_tool, tmp_path):
    """tools/bench_stem_reads.py at a tiny size: both readers return the same samples."""
    from jaxsep.bench.table import read_records, render_table

    record = run_record_tool(
        "bench_stem_reads", "--minutes", "0.2", "--window", "1", "--repeats", "1"
    )
    assert record["max_abs_diff"] == 0.0 and record["speedup"] > 0
    assert set(record["median_s"]) == {
        "jaxsep", "stempeg", "wav_soundfile", "jaxsep_4_stems", "stempeg_4_stems"
    }  # fmt: skip
    assert set(record["median_s_by_offset"]["jaxsep"]) == {"0.6s", "5.5s", "10.4s"}
    table = render_table(read_records([tmp_path / "records"]))
    assert (
        f"| {record['signals']} | {record['device']} | {record['median_s']['jaxsep']:.4g} |"
        in table
    )

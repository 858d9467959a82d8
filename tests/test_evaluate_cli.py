"""`jaxsep evaluate`: museval-like JSON per track and a median summary table."""

import json
import math

import jax
import jax.numpy as jnp
import pytest

from jaxsep.cli import main
from jaxsep.data.synth import synthesize_corpus
from jaxsep.modeldir import save_model_dir
from jaxsep.models.mask_mlp import MaskMLP

STEMS = ["drums", "bass", "other", "vocals"]
METRICS = ("SDR", "SIR", "SAR", "ISR")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "corpus"
    synthesize_corpus(root, songs=2, seconds=2, domain="pop", seed=1, test_fraction=0.5)
    return root


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    kwargs = {"num_sources": 4, "n_fft": 512, "hop": 128, "hidden": 16, "num_channels": 2}
    params = MaskMLP(**kwargs).init(jax.random.key(0), jnp.zeros((1, 1024, 2)))["params"]
    config = {
        "model": "mask_mlp",
        "model_kwargs": kwargs,
        "sources": STEMS,
        "sample_rate": 44100,
        "channels": 2,
    }
    return save_model_dir(tmp_path_factory.mktemp("models") / "mask", config, {"params": params})


def test_evaluate_writes_track_json_and_summary(corpus, model_dir, capsys):
    argv = ["evaluate", "--model", str(model_dir), "--data", str(corpus), "--baseline"]
    assert main(argv + ["--segment", "0.5"]) == 0
    printed = capsys.readouterr().out
    out = model_dir / "eval"  # the default output folder
    test_tracks = sorted(p.name for p in (corpus / "test").iterdir())
    assert len(test_tracks) == 1
    track_files = sorted(p.stem for p in (out / "test").glob("*.json"))
    assert track_files == test_tracks
    scores = json.loads((out / "test" / f"{test_tracks[0]}.json").read_text())
    assert [t["name"] for t in scores["targets"]] == STEMS
    for target in scores["targets"]:
        assert len(target["frames"]) == 2  # 2 s of audio in 1 s windows
        assert [f["time"] for f in target["frames"]] == [0.0, 1.0]
        for frame in target["frames"]:
            assert set(frame["metrics"]) == set(METRICS)
            assert all(math.isfinite(v) for v in frame["metrics"].values())

    summary = json.loads((out / "summary.json").read_text())
    assert summary["tracks"] == test_tracks
    model_sdr = {s: summary["median"]["model"][s]["SDR"] for s in STEMS}
    mixture_sdr = {s: summary["median"]["mixture"][s]["SDR"] for s in STEMS}
    for method in ("model", "mixture"):
        for stem in STEMS:
            assert all(math.isfinite(summary["median"][method][stem][m]) for m in METRICS)
    # an untrained mask model and the mixture are different estimates
    assert model_sdr != mixture_sdr
    # one track: the summary median is that track's frame median
    vocals = next(t for t in scores["targets"] if t["name"] == "vocals")
    frame_sdr = sorted(f["metrics"]["SDR"] for f in vocals["frames"])
    assert model_sdr["vocals"] == pytest.approx(sum(frame_sdr) / 2)

    table = (out / "summary.md").read_text()
    assert "| method | source | SDR (dB) | SIR (dB) | SAR (dB) | ISR (dB) |" in table
    rows = [line for line in table.splitlines() if line.startswith("| model |")]
    assert len(rows) == 4 and len([ln for ln in table.splitlines() if "| mixture |" in ln]) == 4
    assert f"| model | vocals | {model_sdr['vocals']:.2f} |" in table
    assert "| model | drums |" in printed


def test_evaluate_bad_inputs_exit_two(corpus, model_dir, tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["evaluate", "--model", str(tmp_path / "m"), "--data", str(corpus)]) == 2
    assert "model directory not found" in capsys.readouterr().err
    argv = ["evaluate", "--model", str(model_dir), "--data", str(tmp_path / "nowhere")]
    assert main(argv + ["-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "nowhere" in err and "\n" not in err
    assert not out.exists()
    from jaxsep.errors import JaxsepError
    from jaxsep.evaluate.report import evaluate_model

    with pytest.raises(JaxsepError, match="--bsseval 'nope': use one of jax, museval"):
        evaluate_model(model_dir, corpus, bsseval="nope")


def test_jax_and_museval_scorers_write_the_same_scores(corpus, model_dir, tmp_path, monkeypatch):
    """`--bsseval jax` (the default) writes museval's framewise scores, and says which ran."""
    import jaxsep.evaluate.bsseval

    calls = []
    jax_scorer = jaxsep.evaluate.bsseval.bss_eval_v4
    monkeypatch.setattr(
        jaxsep.evaluate.bsseval,
        "bss_eval_v4",
        lambda *args, **kwargs: calls.append(1) or jax_scorer(*args, **kwargs),
    )
    frames = {}
    for backend in ("jax", "museval"):
        calls.clear()
        out = tmp_path / backend
        argv = ["evaluate", "--model", str(model_dir), "--data", str(corpus), "-o", str(out)]
        assert main(argv + ["--segment", "0.5", "--bsseval", backend]) == 0
        summary = json.loads((out / "summary.json").read_text())
        assert summary["bsseval"] == backend
        assert len(calls) == (1 if backend == "jax" else 0)  # one test track
        assert f"(scored by {backend})" in (out / "summary.md").read_text()
        (track,) = summary["tracks"]
        targets = json.loads((out / "test" / f"{track}.json").read_text())["targets"]
        frames[backend] = [
            [f["metrics"][m] for f in target["frames"] for m in METRICS] for target in targets
        ]
    assert len(frames["jax"]) == len(STEMS)
    for got, want in zip(frames["jax"], frames["museval"]):
        assert got == pytest.approx(want, abs=1e-6)  # dB; the bar is 0.01 dB

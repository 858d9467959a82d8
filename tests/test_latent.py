"""Latent analysis: k-means/Hungarian confusion on known clusters, t-SNE, plots, X-UMX latents
from a converted tiny model on a tiny synthetic corpus, and tools/latent_analysis.py."""

import json
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from jaxsep.errors import JaxsepError
from jaxsep.evaluate import latent

SOURCES = ("bass", "drums", "vocals", "other")


def blobs(per_class: int, spread: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Four Gaussian clusters in 8-D with centres `spread` apart (unit noise)."""
    rng = np.random.default_rng(seed)
    centres = spread * np.eye(4, 8)
    labels = np.repeat(np.arange(4), per_class)
    return centres[labels] + rng.standard_normal((len(labels), 8)), labels


def test_separated_clusters_give_diagonal_confusion():
    X, labels = blobs(30, spread=50.0)
    confusion, accuracy, nmi = latent.kmeans_confusion(X, labels, seed=0)
    np.testing.assert_array_equal(confusion, np.diag([30, 30, 30, 30]))
    assert accuracy == 1.0
    assert nmi == pytest.approx(1.0)


def test_unrelated_labels_score_near_chance():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((800, 8))
    labels = rng.integers(0, 4, 800)
    confusion, accuracy, nmi = latent.kmeans_confusion(X, labels, seed=0)
    assert confusion.sum() == 800
    assert 0.25 <= accuracy < 0.33  # Hungarian matching lifts chance (0.25) only slightly
    assert nmi < 0.02


def test_hungarian_alignment_undoes_permuted_cluster_ids():
    labels = np.repeat(np.arange(3), [10, 20, 30])
    # cluster ids are arbitrary values in a permuted order; 2 + 3 points are misassigned
    clusters = np.array([70] * 8 + [5] * 2 + [5] * 20 + [40] * 27 + [70] * 3)
    confusion, accuracy = latent.align_clusters(labels, clusters)
    np.testing.assert_array_equal(confusion, [[8, 2, 0], [0, 20, 0], [3, 0, 27]])
    assert accuracy == pytest.approx(55 / 60)


def test_more_clusters_than_sources_keeps_unmatched_columns_last():
    labels = np.array([0, 0, 0, 1, 1, 1])
    clusters = np.array([2, 2, 9, 0, 0, 0])
    confusion, accuracy = latent.align_clusters(labels, clusters)
    np.testing.assert_array_equal(confusion, [[2, 0, 1], [0, 3, 0]])
    assert accuracy == pytest.approx(5 / 6)


def test_tsne_keeps_separated_clusters_apart():
    X, labels = blobs(15, spread=50.0)
    embedding = latent.tsne_embedding(X, seed=0, perplexity=10)
    assert embedding.shape == (60, 2) and np.all(np.isfinite(embedding))
    _, accuracy, _ = latent.kmeans_confusion(embedding, labels, seed=0)
    assert accuracy == 1.0
    with pytest.raises(JaxsepError, match="perplexity"):
        latent.tsne_embedding(X, perplexity=60)


def test_plots_write_png(tmp_path):
    confusion = np.array([[5, 1, 0, 0], [0, 6, 0, 0], [1, 0, 4, 1], [0, 0, 2, 4]])
    path = latent.plot_confusion(confusion, SOURCES, tmp_path / "sub" / "c.png", "title")
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.std() > 0
    X, labels = blobs(5, spread=5.0)
    path = latent.plot_tsne(X[:, :2], labels, SOURCES, tmp_path / "t.png", "title")
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.std() > 0
    with pytest.raises(JaxsepError, match="source names"):
        latent.plot_confusion(confusion, SOURCES[:3], tmp_path / "x.png")


@pytest.fixture(scope="module")
def tiny_setup(fixtures_dir, tmp_path_factory):
    """The asteroid tiny X-UMX (n_fft 512, hidden 32) as a model dir, and a 2-song corpus."""
    from jaxsep.convert import convert_to_model_dir
    from jaxsep.data.synth import synthesize_corpus

    root = tmp_path_factory.mktemp("latent")
    model_dir = convert_to_model_dir(
        "xumx", fixtures_dir / "xumx" / "xumx_tiny_package.pth", root / "model"
    )
    synthesize_corpus(root / "data", songs=2, seconds=2, domain="pop", seed=0, test_fraction=0.5)
    return model_dir, root / "data"


def test_collect_latents_shapes(tiny_setup):
    import jaxsep
    from jaxsep.data.tracks import MusdbSource

    model_dir, data = tiny_setup
    model = jaxsep.load(model_dir)
    source = MusdbSource(data, subset="test", stems=SOURCES)
    X, labels = latent.collect_latents(
        model, source, excerpts=3, seconds=0.5, frames_per_excerpt=7, batch_size=2
    )
    # 3 excerpts x 4 branches x 7 frames; skip_concat = encoder (32) + LSTM (32) features
    assert X.shape == (84, 64) and X.dtype == np.float32 and np.all(np.isfinite(X))
    np.testing.assert_array_equal(np.bincount(labels), [21, 21, 21, 21])
    # every frame of a 0.5 s excerpt: 1 + 22050 // 128 centred STFT frames
    X, labels = latent.collect_latents(
        model, source, layer="masks", excerpts=1, seconds=0.5, frames_per_excerpt=None
    )
    assert X.shape == (4 * 173, 257 * 2) and labels.shape == (4 * 173,)
    # stems one at a time through the shared bridge average, labelled by the stem
    X, labels = latent.collect_latents(
        model, source, layer="cross_2", inputs="stems", excerpts=2, seconds=0.5, batch_size=1
    )
    assert X.shape[1] == 64 and X.shape[0] == labels.shape[0] and X.shape[0] % 32 == 0
    assert set(labels.tolist()) <= {0, 1, 2, 3} and len(labels) >= 32
    with pytest.raises(JaxsepError, match="shared by all sources"):
        latent.collect_latents(model, source, layer="cross_1")
    with pytest.raises(JaxsepError, match="unknown layer"):
        latent.collect_latents(model, source, layer="decoder")


def test_tool_writes_plots_and_table(tiny_setup, tmp_path, capsys, load_tool):
    model_dir, data = tiny_setup
    tool = load_tool("latent_analysis")
    out = tmp_path / "report"
    argv = ["--model", str(model_dir), "--data", str(data), "--out", str(out), "--seconds", "0.5"]
    argv += ["--excerpts", "2", "--frames-per-excerpt", "8", "--perplexity", "5"]
    assert tool.main(argv) == 0
    rows = json.loads((out / "latent.json").read_text())
    assert [r["name"] for r in rows] == ["model"]  # a converted model has no method: folder name
    assert rows[0]["points"] == 64 and np.sum(rows[0]["confusion"]) == 64
    assert 0.0 <= rows[0]["accuracy"] <= 1.0 and rows[0]["chance"] == 0.25
    for png in ("model_confusion.png", "model_tsne.png"):
        assert matplotlib.image.imread(out / png).std() > 0
    table = (out / "latent.md").read_text()
    assert f"| model | - | skip_concat | mixture | 64 | {rows[0]['accuracy']:.3f} |" in table
    bad = ["--model", str(tmp_path / "missing"), "--data", str(data), "--out", str(out)]
    assert tool.main(bad) == 2
    assert "model directory not found" in capsys.readouterr().err


def test_model_names_prefer_method_and_disambiguate(load_tool):
    tool = load_tool("latent_analysis")
    dirs = [Path("/a/run1/model"), Path("/a/run2/model"), Path("/a/x/model")]
    configs = [{"method": "conreg"}, {"method": "conreg"}, {"method": "dis reg"}]
    assert tool.model_names(dirs, configs) == ["conreg-run1-model", "conreg-run2-model", "dis_reg"]
    with pytest.raises(JaxsepError, match="given twice"):
        tool.model_names([dirs[0], dirs[0]], configs[:2])

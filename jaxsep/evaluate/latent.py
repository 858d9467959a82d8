"""Latent-space analysis of X-UMX source branches: k-means confusion matrices and t-SNE plots.

The feature-informed regularisers (Con-Reg, Dis-Reg) aim to make the latents of the source
branches separate by source. Running a mixture through the model gives one latent per branch and
frame; if the regulariser works, clustering those latents (k = number of sources) recovers the
branch they came from. Clusters are matched to sources by the Hungarian algorithm, so the
accuracy and the confusion matrix do not depend on k-means' arbitrary cluster ids.

Everything after `collect_latents` is plain numpy / scikit-learn on the host.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from jaxsep.errors import JaxsepError

# Intermediates the X-UMX model sows with one entry per source ([B, S, frames, ...]).
PER_SOURCE_LAYERS = ("enc_out", "lstm_out", "skip_concat", "masks")
# Bridge averages: the same tensor for every source, so they cannot separate by source.
SHARED_LAYERS = ("cross_1", "cross_2")


INPUTS = ("mixture", "stems")
SILENCE_DB = -60.0  # a stem this quiet alone carries no source identity: skipped in "stems"


def _check_layer(layer: str, inputs: str, bridge: bool) -> None:
    if inputs not in INPUTS:
        raise JaxsepError(f"unknown inputs '{inputs}'; use one of {INPUTS}")
    if layer not in PER_SOURCE_LAYERS + SHARED_LAYERS:
        raise JaxsepError(
            f"unknown layer '{layer}'; use one of {PER_SOURCE_LAYERS + SHARED_LAYERS}"
        )
    if layer in SHARED_LAYERS and not bridge:
        raise JaxsepError(f"layer '{layer}' exists only in a bridged X-UMX (bridge=True)")
    if layer in SHARED_LAYERS and inputs == "mixture":
        raise JaxsepError(
            f"layer '{layer}' is the bridge average shared by all sources, so on a mixture it "
            f"cannot separate them; use inputs='stems' or one of {PER_SOURCE_LAYERS}"
        )


def check_model(model) -> None:
    """The analysis reads X-UMX intermediates: any other model is refused with one line."""
    from jaxsep.models.xumx import XUMX

    if not isinstance(model.module, XUMX):
        raise JaxsepError(
            f"latent analysis needs an X-UMX model, got {type(model.module).__name__}"
        )


def _check_model_and_source(model, source) -> None:
    check_model(model)
    rate = model.config.get("sample_rate")
    if rate is not None and int(round(float(rate))) != int(source.sample_rate):
        raise JaxsepError(
            f"data is {source.sample_rate} Hz but the model expects {int(round(float(rate)))} Hz"
        )
    if int(source.channels) != int(model.module.nb_channels):
        raise JaxsepError(
            f"data has {source.channels} channels but the model expects {model.module.nb_channels}"
        )


def collect_latents(
    model,
    source,
    *,
    layer: str = "skip_concat",
    excerpts: int = 16,
    seconds: float = 6.0,
    seed: int = 0,
    frames_per_excerpt: int | None = 32,
    batch_size: int = 4,
    inputs: str = "mixture",
) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame latents labelled by source, from random coherent excerpts of `source`.

    `model` is a loaded X-UMX model directory (`jaxsep.load`), `source` a `TrackSource` at the
    model's rate with the model's stems. `inputs="mixture"` (the seed paper's view): the mix goes
    in and every source branch's latent is labelled by its branch. `inputs="stems"`: each stem
    goes in alone and the latent of its own branch (or the shared bridge average, `cross_1` /
    `cross_2`) is labelled by that stem; silent stems are skipped. Per excerpt
    `frames_per_excerpt` random frames (None = all; the same ones for every source) are kept,
    which bounds n. Returns `X [n, D]` float32 and `labels [n]`, indices into
    `model.module.sources`.
    """
    import jax

    from jaxsep.data.mixing import ExcerptSampler, level_db
    from jaxsep.models.embeddings import conditioning_features, stored_embedding

    module = model.module
    _check_model_and_source(model, source)
    _check_layer(layer, inputs, module.bridge)
    if excerpts < 1 or batch_size < 1:
        raise JaxsepError(f"excerpts and batch_size must be >= 1, got {excerpts}, {batch_size}")
    if frames_per_excerpt is not None and frames_per_excerpt < 1:
        raise JaxsepError(f"frames_per_excerpt must be >= 1 or None, got {frames_per_excerpt}")
    sources = tuple(module.sources)
    sampler = ExcerptSampler(source, seconds=seconds, stems=sources, coherent=True)
    rng = np.random.default_rng(seed)
    per_item = 1 if inputs == "mixture" else len(sources)

    @jax.jit
    def latent_of(variables, wave):
        extra = None
        if module.extra_features:  # Concat: the stored frozen embedding, an argument here
            extra = conditioning_features(model.config, wave, stored_embedding(variables))
        _, state = module.apply(variables, wave, extra=extra, mutable=["intermediates"])
        return state["intermediates"][layer][0]  # sow keeps a tuple of the values

    features, labels = [], []
    for begin in range(0, excerpts, batch_size):
        count = min(batch_size, excerpts - begin)
        examples = [sampler.sample(rng) for _ in range(count)]
        if inputs == "mixture":
            wave = np.stack([ex["mixture"] for ex in examples])
        else:
            wave = np.concatenate([ex["sources"] for ex in examples])
        rows = len(wave)
        # pad the last batch to the full size: one shape, one compilation
        wave = np.pad(wave, ((0, batch_size * per_item - rows), (0, 0), (0, 0)))
        wave = wave.astype(np.float32)
        latent = np.asarray(latent_of(model.variables, wave), np.float32)[:rows]
        shared = layer in SHARED_LAYERS
        num_frames = latent.shape[1 if shared else 2]
        latent = latent.reshape(*latent.shape[: 2 if shared else 3], -1)  # masks: bins x C
        for i, example in enumerate(examples):
            frames = np.arange(num_frames)
            if frames_per_excerpt is not None and frames_per_excerpt < num_frames:
                frames = np.sort(rng.choice(num_frames, frames_per_excerpt, replace=False))
            for s in range(len(sources)):
                if inputs == "mixture":
                    x = latent[i, s, frames]
                elif level_db(example["sources"][s]) < SILENCE_DB:
                    continue
                else:
                    row = latent[i * per_item + s]
                    x = row[frames] if shared else row[s, frames]
                features.append(x)
                labels.append(np.full(len(frames), s, np.int64))
    if not features:
        raise JaxsepError(
            f"tracks {source.names[:3]}...: every sampled stem is silent, so there are no latents"
        )
    return np.concatenate(features), np.concatenate(labels)


def _check_points(X: np.ndarray, labels: np.ndarray) -> None:
    if X.ndim != 2 or labels.shape != (X.shape[0],):
        raise JaxsepError(f"need X [n, D] and labels [n], got {X.shape} and {labels.shape}")
    if not np.all(np.isfinite(X)):
        raise JaxsepError("latents contain NaN or inf")


def align_clusters(labels: np.ndarray, clusters: np.ndarray) -> tuple[np.ndarray, float]:
    """Confusion matrix `[S, k]` (rows: sorted label values) with the columns reordered so that
    cluster j is matched to label j (Hungarian, maximising the matched count), and the accuracy
    of that matching. Unmatched clusters (k > S) come last, in their original order."""
    from scipy.optimize import linear_sum_assignment
    from sklearn.metrics import confusion_matrix

    label_values = np.unique(labels)
    cluster_values = np.unique(clusters)
    label_index = np.searchsorted(label_values, labels)
    cluster_index = np.searchsorted(cluster_values, clusters)
    counts = confusion_matrix(
        label_index,
        cluster_index,
        labels=np.arange(max(len(label_values), len(cluster_values))),
    )[: len(label_values)]
    rows, cols = linear_sum_assignment(counts, maximize=True)
    order = list(cols[np.argsort(rows)])
    order += [c for c in range(counts.shape[1]) if c not in order]
    aligned = counts[:, order]
    accuracy = float(counts[rows, cols].sum() / max(len(labels), 1))
    return aligned, accuracy


def kmeans_confusion(
    X: np.ndarray, labels: np.ndarray, k: int | None = None, seed: int = 0
) -> tuple[np.ndarray, float, float]:
    """k-means (k = number of sources by default) on `X [n, D]`; returns the confusion matrix
    after Hungarian alignment of clusters to sources, the clustering accuracy under that
    alignment (chance = largest class share) and the normalised mutual information."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import normalized_mutual_info_score

    X = np.asarray(X, np.float64)
    labels = np.asarray(labels)
    _check_points(X, labels)
    k = len(np.unique(labels)) if k is None else int(k)
    if not 1 <= k <= X.shape[0]:
        raise JaxsepError(f"k must be in [1, {X.shape[0]}] (number of points), got {k}")
    clusters = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(X)
    confusion, accuracy = align_clusters(labels, clusters)
    nmi = float(normalized_mutual_info_score(labels, clusters))
    return confusion, accuracy, nmi


def tsne_embedding(X: np.ndarray, seed: int = 0, perplexity: float = 30.0) -> np.ndarray:
    """2-D t-SNE of `X [n, D]` (PCA to 50 dimensions first when D is larger, the usual speed-up
    that keeps the neighbourhoods t-SNE preserves). Returns `[n, 2]`."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    X = np.asarray(X, np.float64)
    _check_points(X, np.zeros(len(X)))
    if not 0 < perplexity < X.shape[0]:
        raise JaxsepError(
            f"t-SNE perplexity must be in (0, {X.shape[0]}) (number of points), got {perplexity}"
        )
    if X.shape[1] > 50 and X.shape[0] > 50:
        X = PCA(n_components=50, random_state=seed).fit_transform(X)
    tsne = TSNE(
        n_components=2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=seed
    )
    return tsne.fit_transform(X).astype(np.float32)


def _figure(size: tuple[float, float]):
    """A figure on the Agg canvas, without pyplot's global state (safe in any process)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=size, dpi=100)
    FigureCanvasAgg(figure)
    return figure


def plot_confusion(
    confusion: np.ndarray, names: Sequence[str], path: str | Path, title: str = ""
) -> Path:
    """Heatmap of an aligned confusion matrix `[S, k]` with the counts written in the cells."""
    confusion = np.asarray(confusion)
    rows, cols = confusion.shape
    if len(names) != rows:
        raise JaxsepError(f"{len(names)} source names for a confusion matrix with {rows} rows")
    figure = _figure((1.2 * cols + 2.0, 1.0 * rows + 1.5))
    axes = figure.add_subplot()
    image = axes.imshow(confusion, cmap="Blues")
    figure.colorbar(image, ax=axes)
    threshold = confusion.max() / 2 if confusion.size else 0
    for i in range(rows):
        for j in range(cols):
            colour = "white" if confusion[i, j] > threshold else "black"
            axes.text(j, i, str(int(confusion[i, j])), ha="center", va="center", color=colour)
    axes.set_yticks(range(rows), list(names))
    axes.set_xticks(
        range(cols), [f"c{j} ({names[j]})" if j < rows else f"c{j}" for j in range(cols)]
    )
    axes.set_ylabel("source branch")
    axes.set_xlabel("k-means cluster (matched)")
    axes.set_title(title)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path


def plot_tsne(
    embedding: np.ndarray,
    labels: np.ndarray,
    names: Sequence[str],
    path: str | Path,
    title: str = "",
) -> Path:
    """Scatter of a 2-D embedding, one colour per source branch (`labels` index `names`)."""
    embedding = np.asarray(embedding)
    labels = np.asarray(labels)
    if embedding.ndim != 2 or embedding.shape[1] != 2 or labels.shape != (len(embedding),):
        raise JaxsepError(f"need embedding [n, 2] and labels [n], got {embedding.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= len(names)):
        raise JaxsepError(f"labels must index the {len(names)} source names")
    figure = _figure((6.0, 5.0))
    axes = figure.add_subplot()
    for index, name in enumerate(names):
        points = embedding[labels == index]
        axes.scatter(points[:, 0], points[:, 1], s=6, alpha=0.7, label=name)
    axes.legend(markerscale=3, loc="best")
    axes.set_xticks([])
    axes.set_yticks([])
    axes.set_title(title)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path

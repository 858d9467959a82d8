"""`jaxsep demo`: the X-UMX recipe end to end on a corpus it synthesises itself.

Synthesises a small pop corpus in MUSDB18-HQ layout, trains a small X-UMX (the ``xumx_vggish``
recipe, method ``baseline``: multi-domain + combination loss) through the grain pipeline and the
generic trainer, separates the test songs with the batched overlap-add :class:`Separator` (masks
-> Wiener -> iSTFT), scores them with the MDX SDR next to the mixture-as-estimate baseline and
writes ``report.md`` with the SDR table, a loss curve and a per-source SDR chart. Its sizes are
chosen so the whole run fits in a few minutes of two CPU cores and still separates.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax
import ml_collections
import numpy as np

from jaxsep.data.synth import synthesize_corpus
from jaxsep.data.tracks import MusdbSource
from jaxsep.errors import JaxsepError
from jaxsep.evaluate.metrics import sdr
from jaxsep.modeldir import CONFIG_FILE, load
from jaxsep.recipes import xumx_vggish
from jaxsep.separate import Separator

CORPUS = {"songs": 10, "seconds": 12.0, "domain": "pop", "seed": 0, "test_fraction": 0.2}
LOSS_PLOT = "loss.png"
SDR_PLOT = "sdr.png"


def demo_config(corpus_root: str | Path, steps: int | None = None) -> ml_collections.ConfigDict:
    """The recipe's ``tiny`` X-UMX baseline, sized to learn in a few hundred CPU steps.

    Why these sizes: hidden 64 and one BLSTM layer keep a step cheap; n_fft 1024 / hop 256 gives
    the masks enough frequency resolution to tell bass from drums; lr 1e-3 without weight decay,
    no plateau/early stopping (too few evaluations for them to mean anything); batches of 4 x 2 s
    excerpts (300 steps cost ~6 CPU-minutes).
    """
    config = xumx_vggish.config_for("baseline", "tiny")
    config.data.root = str(corpus_root)
    config.data.setup_file = "synth.yaml"
    config.num_steps = 300
    devices = jax.device_count()
    config.batch_size = -(-4 // devices) * devices  # 4, or one example per device
    config.log_every = 10
    config.eval_every = 50
    config.checkpoint_every = 100
    config.optimizer.lr = 1e-3
    config.optimizer.weight_decay = 0.0
    config.data.seconds = 2.0
    config.data.examples_per_epoch = 256
    config.data.eval_examples = 8
    config.data.stats_examples = 32
    config.model.n_fft = 1024
    config.model.hop = 256
    config.model.hidden_size = 64
    config.model.nb_layers = 1
    config.separation = ml_collections.ConfigDict()
    config.separation.segment = 6.0  # seconds per overlap-add segment
    config.separation.wiener_iterations = 1  # X-UMX's evaluation post-filter: one EM iteration
    if steps is not None:
        config.num_steps = steps
        config.eval_every = max(1, steps // 2)
        config.checkpoint_every = max(1, steps // 2)
        config.log_every = max(1, min(config.log_every, steps // 2))
    return config


def _apply_overrides(config: ml_collections.ConfigDict, overrides: dict) -> None:
    """Set dotted fields of the demo config; a misspelt or mistyped field is an error."""
    for key, value in overrides.items():
        *parents, leaf = str(key).split(".")
        node = config
        for part in parents:
            node = node.get(part) if isinstance(node, ml_collections.ConfigDict) else None
        if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
            raise JaxsepError(f"demo: unknown config field {key!r}")
        try:
            node[leaf] = value
        except (TypeError, ValueError) as e:
            raise JaxsepError(f"demo: config field {key!r}: {e}") from None


def _make_corpus(root: Path, corpus: dict) -> dict:
    if (root / "train").is_dir() and (root / "test").is_dir():
        return {"reused": True}
    return synthesize_corpus(root, workers=2, **corpus)


def _record_separation(model_dir: Path, separation: ml_collections.ConfigDict) -> None:
    """Write the segment and post-filter into the model's config.json, so `jaxsep separate`
    on the demo model does what the demo scored."""
    path = model_dir / CONFIG_FILE
    config = json.loads(path.read_text())
    config["segment"] = float(separation.segment)
    config["separation"] = {
        **config.get("separation", {}),
        "wiener_iterations": int(separation.wiener_iterations),
    }
    path.write_text(json.dumps(config, indent=2))


def separate_and_score(model_dir: Path, corpus: Path) -> list[dict]:
    """Separate every test song; MDX SDR per source next to the mixture-as-estimate baseline."""
    separator = Separator(load(model_dir), overlap=0.25, batch_size=2)
    stems = separator.sources
    source = MusdbSource(corpus, subset="test", stems=stems)
    rows = []
    for i, name in enumerate(source.names):
        frames = source.num_frames(i)
        mixture = source.read_mixture(i, 0, frames)
        references = np.stack([source.read(i, stem, 0, frames) for stem in stems])  # [S, T, C]
        separated = separator(mixture, int(source.sample_rate))
        estimates = np.stack([separated[stem] for stem in stems])
        model_sdr = np.asarray(sdr(references, estimates))
        baseline_sdr = np.asarray(sdr(references, np.broadcast_to(mixture, references.shape)))
        rows.append(
            {
                "track": name,
                "sdr": dict(zip(stems, model_sdr.tolist(), strict=True)),
                "mixture_sdr": dict(zip(stems, baseline_sdr.tolist(), strict=True)),
            }
        )
    return rows


def read_metrics(metrics_path: Path) -> tuple[list[dict], list[dict]]:
    """Train and eval records of the trainer's ``metrics.jsonl`` (last run of each step wins)."""
    records = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    by_split: dict[str, dict[int, dict]] = {"train": {}, "eval": {}}
    for record in records:
        if record.get("split") in by_split and "loss" in record:
            by_split[record["split"]][int(record["step"])] = record
    return tuple(sorted(v.values(), key=lambda r: r["step"]) for v in by_split.values())


def median_sdr(rows: list[dict]) -> dict[str, tuple[float, float]]:
    """``{stem: (model, mixture baseline)}`` medians over the songs (MUSDB's aggregation)."""
    stems = list(rows[0]["sdr"]) if rows else []
    return {
        stem: (
            float(np.median([r["sdr"][stem] for r in rows])),
            float(np.median([r["mixture_sdr"][stem] for r in rows])),
        )
        for stem in stems
    }


def plot_losses(train: list[dict], evals: list[dict], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([r["step"] for r in train], [r["loss"] for r in train], label="training")
    ax.plot([r["step"] for r in evals], [r["loss"] for r in evals], "o-", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("MDL + combination loss")
    ax.set_title("X-UMX training")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def plot_sdr(medians: dict[str, tuple[float, float]], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stems = list(medians)
    x = np.arange(len(stems))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(x - 0.2, [medians[s][0] for s in stems], 0.4, label="X-UMX")
    ax.bar(x + 0.2, [medians[s][1] for s in stems], 0.4, label="mixture as estimate")
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xticks(x, stems)
    ax.set_ylabel("SDR (dB, median over songs)")
    ax.set_title("Test-song SDR")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def _report(
    workdir: Path,
    rows: list[dict],
    train: list[dict],
    evals: list[dict],
    timings: dict,
    config: ml_collections.ConfigDict,
    corpus: dict,
) -> str:
    m = config.model
    medians = median_sdr(rows)
    lines = [
        "# jaxsep demo report",
        "",
        f"Corpus: synthetic pop, {corpus['songs']} songs x {corpus['seconds']:g} s "
        f"(seed {corpus['seed']}), MUSDB18-HQ layout in `{workdir / 'corpus'}`; "
        f"{len(rows)} test songs.",
        f"Model: X-UMX (`xumx_vggish` recipe, method `{config.method}`), hidden "
        f"{m.hidden_size}, {m.nb_layers} BLSTM layer(s), STFT {m.n_fft}/{m.hop}; "
        f"{config.num_steps} steps of batch {config.batch_size} x {config.data.seconds:g} s, "
        f"Adam lr {config.optimizer.lr:g}, on {jax.device_count()} {jax.default_backend()} "
        f"device(s). Separation: masks -> Wiener ({config.separation.wiener_iterations} EM "
        f"iteration(s)) -> iSTFT, {config.separation.segment:g} s segments.",
        "",
    ]
    if train:
        lines.append(f"Training loss {train[0]['loss']:.4g} -> {train[-1]['loss']:.4g}.")
    if evals:
        lines.append(
            "Validation loss by step: " + ", ".join(f"{r['step']}: {r['loss']:.4g}" for r in evals)
        )
    lines += [
        "",
        f"![loss curve]({LOSS_PLOT})",
        "",
        "## SDR on the test songs (MDX definition, dB; median over songs)",
        "",
        "| source | model | mixture as estimate | improvement |",
        "|---|---|---|---|",
    ]
    for stem, (model_sdr, base_sdr) in medians.items():
        lines.append(f"| {stem} | {model_sdr:.2f} | {base_sdr:.2f} | {model_sdr - base_sdr:+.2f} |")
    lines += [
        "",
        f"![SDR per source]({SDR_PLOT})",
        "",
        "Per-song scores: `scores.json`. Timings (s): "
        + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()),
        "",
    ]
    return "\n".join(lines)


def run_demo(
    workdir: str | Path = "demo_run",
    steps: int | None = None,
    corpus: dict | None = None,
    overrides: dict | None = None,
) -> Path:
    """Run the demo end to end; returns the path of `report.md`.

    `corpus` overrides fields of the default corpus (`CORPUS`); `overrides` sets dotted fields
    of :func:`demo_config` (e.g. ``{"data.seconds": 1.0}``). An existing corpus in
    `workdir/corpus` is reused, and a finished training run there is resumed, not repeated.
    """
    if steps is not None and (not isinstance(steps, int) or steps < 1):
        raise JaxsepError(f"demo: steps must be a positive integer, got {steps!r}")
    unknown = sorted(set(corpus or {}) - set(CORPUS))
    if unknown:
        raise JaxsepError(f"demo: unknown corpus fields {unknown} (known: {sorted(CORPUS)})")
    corpus = CORPUS | (corpus or {})
    workdir = Path(workdir)
    config = demo_config(workdir / "corpus", steps)
    _apply_overrides(config, overrides or {})  # bad input fails here, before any work
    workdir.mkdir(parents=True, exist_ok=True)
    timings = {}
    start = time.perf_counter()
    _make_corpus(workdir / "corpus", corpus)
    timings["synthesis"] = time.perf_counter() - start

    start = time.perf_counter()
    model_dir = xumx_vggish.train(config, workdir / "train")
    _record_separation(model_dir, config.separation)
    timings["training"] = time.perf_counter() - start

    start = time.perf_counter()
    rows = separate_and_score(model_dir, workdir / "corpus")
    timings["separation + scoring"] = time.perf_counter() - start

    train, evals = read_metrics(workdir / "train" / "metrics.jsonl")
    plot_losses(train, evals, workdir / LOSS_PLOT)
    plot_sdr(median_sdr(rows), workdir / SDR_PLOT)
    (workdir / "scores.json").write_text(json.dumps(rows, indent=2))
    report = workdir / "report.md"
    report.write_text(_report(workdir, rows, train, evals, timings, config, corpus))
    return report

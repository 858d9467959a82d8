"""Latent analysis of X-UMX transfer methods: k-means confusion matrix and t-SNE plot per model.

    python tools/latent_analysis.py --model DIR [--model DIR2 ...] --data ROOT --out OUT
        [--layer skip_concat] [--inputs mixture|stems] [--subset test] [--excerpts 16]
        [--seconds 6] [--frames-per-excerpt 32] [--perplexity 30] [--seed 0]

For each model directory (from `jaxsep train` with the xumx_vggish recipe, or `jaxsep convert
xumx`) the same excerpts of ROOT (MUSDB18-HQ layout) go through the model, the per-frame latents
of the chosen layer are clustered with k-means (k = number of sources) and embedded with t-SNE.
Writes OUT/<name>_confusion.png, OUT/<name>_tsne.png, OUT/latent.json and OUT/latent.md
(accuracy after Hungarian matching of clusters to sources, NMI, chance level per model), where
<name> is the model's `method` (baseline, concat, conreg, disreg) from its config.json.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path


def model_names(dirs: list[Path], configs: list[dict]) -> list[str]:
    """One file-safe name per model: its method (or recipe, or folder name); the folder name is
    appended where two models would share a name."""
    base = [str(c.get("method") or c.get("recipe") or d.name) for d, c in zip(dirs, configs)]
    names = []
    for d, name in zip(dirs, base):
        if base.count(name) > 1:
            name = f"{name}-{d.resolve().parent.name}-{d.name}"
        names.append(re.sub(r"[^A-Za-z0-9_.-]+", "_", name))
    if len(set(names)) != len(names):
        from jaxsep.errors import JaxsepError

        raise JaxsepError(f"--model: a model directory is given twice ({[str(d) for d in dirs]})")
    return names


def analyse(model_dir: Path, name: str, args: argparse.Namespace) -> dict:
    """Latents, clustering and t-SNE of one model; writes its two PNGs, returns its row."""
    import numpy as np

    import jaxsep
    from jaxsep.data.tracks import MusdbSource
    from jaxsep.evaluate import latent

    model = jaxsep.load(model_dir)
    latent.check_model(model)
    sources = list(model.module.sources)
    data = MusdbSource(args.data, subset=args.subset, stems=sources)
    X, labels = latent.collect_latents(
        model,
        data,
        layer=args.layer,
        excerpts=args.excerpts,
        seconds=args.seconds,
        seed=args.seed,
        frames_per_excerpt=args.frames_per_excerpt,
        inputs=args.inputs,
    )
    confusion, accuracy, nmi = latent.kmeans_confusion(X, labels, seed=args.seed)
    embedding = latent.tsne_embedding(X, seed=args.seed, perplexity=args.perplexity)
    title = f"{name}: {args.layer} ({args.inputs})"
    confusion_png = latent.plot_confusion(
        confusion,
        sources,
        args.out / f"{name}_confusion.png",
        f"{title}\naccuracy {accuracy:.3f}, NMI {nmi:.3f}",
    )
    tsne_png = latent.plot_tsne(embedding, labels, sources, args.out / f"{name}_tsne.png", title)
    return {
        "name": name,
        "model": str(model_dir),
        "method": model.config.get("method"),
        "layer": args.layer,
        "inputs": args.inputs,
        "points": int(len(X)),
        "dimensions": int(X.shape[1]),
        "sources": sources,
        "accuracy": accuracy,
        "nmi": nmi,
        "chance": float(np.bincount(labels).max() / len(labels)),
        "confusion": confusion.tolist(),
        "confusion_png": confusion_png.name,
        "tsne_png": tsne_png.name,
    }


def write_table(rows: list[dict], path: Path) -> Path:
    """latent.md: one row per model, images linked."""
    lines = [
        "| model | method | layer | inputs | points | k-means accuracy | NMI | chance | plots |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['method'] or '-'} | {r['layer']} | {r['inputs']} | {r['points']}"
            f" | {r['accuracy']:.3f} | {r['nmi']:.3f} | {r['chance']:.3f}"
            f" | [confusion]({r['confusion_png']}) [t-SNE]({r['tsne_png']}) |"
        )
    lines += [
        "",
        "Accuracy: share of latents whose k-means cluster (k = number of sources) is matched to",
        "their source by the Hungarian algorithm; NMI: normalised mutual information of clusters",
        "and sources; chance: share of the largest source.",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, action="append", required=True, help="model dir")
    parser.add_argument("--data", type=Path, required=True, help="MUSDB18-HQ-layout root")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--layer", default="skip_concat", help="enc_out|lstm_out|skip_concat|...")
    parser.add_argument("--inputs", choices=("mixture", "stems"), default="mixture")
    parser.add_argument("--subset", default="test", help="MUSDB subset folder (train|test)")
    parser.add_argument("--excerpts", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--frames-per-excerpt", type=int, default=32)
    parser.add_argument("--perplexity", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from jaxsep.errors import JaxsepError
    from jaxsep.modeldir import read_config

    try:
        configs = [read_config(d) for d in args.model]
        names = model_names(args.model, configs)
        args.out.mkdir(parents=True, exist_ok=True)
        rows = [analyse(d, name, args) for d, name in zip(args.model, names)]
    except JaxsepError as e:
        print(f"latent_analysis: {e}", file=sys.stderr)
        return 2
    (args.out / "latent.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(write_table(rows, args.out / "latent.md").read_text(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The ChimeraNet transfer-learning grid (Bugler et al. 2020, Table 2 and Fig. 3) on offline data.

    python tools/transfer_study.py --scale tiny|paper --out DIR [--fof FOF_DIR] [--variants a,b]

1. Synthesises a pop corpus (pre-training) and a Bach-chorale corpus (fine-tuning: 6 chorales,
   ~5 min at paper scale; 3 validation and 15 test chorales) under DIR/data.
2. Pre-trains ChimeraNet with deep clustering only, once per variant: plain, +pitch shift,
   +time stretch, +incoherent mixing. `--scale tiny` runs plain and incoherent only (pitch shift
   and time stretch cost ~1 s of phase vocoder per excerpt on a loaded 2-core machine).
3. For each target domain (chorales; Frets-on-Fire songs with `--fof`, guitar vs backing, 4/1/3
   songs for fine-tune/validation/test) fine-tunes every pre-training as a whole model and as a
   mask model, and trains a from-scratch baseline for pre-training + fine-tuning iterations.
4. Scores every model on the same N random test excerpts (paper 1000, tiny 100) with SI-SDR and
   compares it with the baseline by a one-sided Wilcoxon signed-rank test (H1: better).
5. Writes DIR/results.json, DIR/table.md (Table 2 layout: mean SI-SDR difference to scratch, '*'
   where p < 0.001) and DIR/curves_<domain>.png (validation loss vs iteration, Fig. 3 layout;
   fine-tune curves start at the pre-training's last iteration).
Finished runs (DIR/runs/<name>/model) are reused, so an interrupted study resumes.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

SIGNIFICANCE = 1e-3  # the paper's threshold
VARIANTS = {
    "plain": "",
    "pitch": "pitch",
    "stretch": "stretch",
    "incoherent": "incoherent",
}
SCALES = {
    "tiny": {
        "variants": ("plain", "incoherent"),
        "pop": {"songs": 8, "seconds": 8.0, "test_fraction": 0.25},
        "chorale": {"songs": 6, "seconds": 8.0, "test_fraction": 0.5},
        "chorale_tracks": {"valid": ":1", "test": "1:"},
        "num_excerpts": 100,
    },
    "paper": {
        "variants": tuple(VARIANTS),
        "pop": {"songs": 240, "seconds": 60.0, "test_fraction": 0.1},  # ~4 h of pre-training audio
        "chorale": {"songs": 24, "seconds": 0.0, "test_fraction": 0.75},  # 6 train, 3 + 15 test
        "chorale_tracks": {"valid": ":3", "test": "3:"},
        "num_excerpts": 1000,
    },
}
FOF_TRACKS = {"valid": "4:5", "test": "5:"}


# ------------------------------------------------------------------------------------------
# Report writers (pure: results dict in, files out)


def _cell(comparison: dict) -> str:
    overall = comparison["overall"]
    mark = "*" if overall["p_value"] < SIGNIFICANCE else ""
    return f"{overall['mean_difference']:+.2f}{mark} (p={overall['p_value']:.2g})"


def table_markdown(results: dict) -> str:
    """Table 2 layout: rows = pre-training variants, columns = target domain x fine-tune kind."""
    domains, variants = results["domains"], results["variants"]
    header = ["pre-training"] + [f"{d} {kind}" for d in domains for kind in ("whole", "mask")]
    lines = [
        f"# ChimeraNet transfer study ({results['scale']} scale)",
        "",
        f"Mean SI-SDR difference (dB) to the from-scratch baseline over {results['num_excerpts']} "
        "test excerpts (mean over sources per excerpt); `*`: one-sided Wilcoxon signed-rank "
        f"p < {SIGNIFICANCE:g} (H1: better than scratch).",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for variant in variants:
        cells = [variant]
        for domain in domains:
            for kind in ("whole", "mask"):
                comparison = results["comparisons"][domain].get(f"{variant}/{kind}")
                cells.append(_cell(comparison) if comparison else "-")
        lines.append("| " + " | ".join(cells) + " |")
    scratch = ["scratch (absolute dB)"]
    for domain in domains:
        value = results["scores"][domain]["scratch"]["overall"]["mean"]
        scratch += [f"{value:.2f}", f"{value:.2f}"]
    lines.append("| " + " | ".join(scratch) + " |")
    lines += ["", "## Mean SI-SDR per source (dB)", ""]
    for domain in domains:
        scores = results["scores"][domain]
        stems = [s for s in next(iter(scores.values())) if s != "overall"] + ["overall"]
        lines += [f"### {domain}", "", "| model | " + " | ".join(stems) + " |"]
        lines.append("|" + "---|" * (len(stems) + 1))
        for name, summary in scores.items():
            values = " | ".join(f"{summary[s]['mean']:.2f}" for s in stems)
            lines.append(f"| {name} | {values} |")
        lines.append("")
    if results.get("wall_seconds") is not None:
        lines.append(
            f"Wall time of this invocation: {results['wall_seconds']:.0f} s (finished runs are reused)."
        )
    return "\n".join(lines) + "\n"


def plot_curves(curves: dict, path: Path, title: str) -> Path:
    """Validation loss vs iteration for every run in `curves` ({name: {"steps", "loss",
    "offset", optionally "mi"}}); fine-tune runs are drawn from `offset` (their pre-training's
    iterations). With "mi" a second panel shows the mask-inference term alone: at alpha = 0.01
    the total is often dominated by the DC term, which a mask-only fine-tune cannot change."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("loss", "validation loss (alpha DC + (1 - alpha) MI)")]
    if any("mi" in curve for curve in curves.values()):
        panels.append(("mi", "validation mask-inference L1"))
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 4.5), squeeze=False)
    for ax, (key, label) in zip(axes[0], panels):
        for name, curve in sorted(curves.items()):
            if key not in curve:
                continue
            steps = [s + curve.get("offset", 0) for s in curve["steps"]]
            style = "-" if name == "scratch" else ("--" if name.endswith("/mask") else "-.")
            ax.plot(steps, curve[key], style, label=name, linewidth=1.5)
        ax.set_xlabel("iteration")
        ax.set_ylabel(label)
        ax.set_yscale("log")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(results: dict, out: Path) -> list[Path]:
    """results.json, table.md and one curves PNG per domain (and one for the pre-trainings)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "table.md").write_text(table_markdown(results))
    written = [out / "results.json", out / "table.md"]
    for domain in results["domains"]:
        curves = results["curves"].get(domain, {})
        if curves:
            written.append(
                plot_curves(curves, out / f"curves_{domain}.png", f"fine-tuning on {domain}")
            )
    if results["curves"].get("pretrain"):
        written.append(
            plot_curves(results["curves"]["pretrain"], out / "curves_pretrain.png", "pre-training")
        )
    return written


# ------------------------------------------------------------------------------------------
# The study


def eval_curve(workdir: Path) -> dict:
    """Steps, total loss and (where logged) the MI term of the eval records in
    `workdir/metrics.jsonl` (the last record per step wins: a resumed run logs steps again)."""
    records = {}
    for line in (workdir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record.get("split") == "eval":
            records[record["step"]] = record
    steps = sorted(records)
    curve = {"steps": steps, "loss": [records[s]["loss"] for s in steps]}
    if steps and all("mi" in records[s] for s in steps):
        curve["mi"] = [records[s]["mi"] for s in steps]
    return curve


def _run(config, workdir: Path, log) -> Path:
    from jaxsep.recipes.chimera_transfer import train

    model_dir = workdir / "model"
    if (model_dir / "config.json").is_file():
        log(f"reuse {model_dir}")
        return model_dir
    start = time.perf_counter()
    train(config, workdir)
    log(f"trained {workdir.name} ({config.num_steps} steps) in {time.perf_counter() - start:.0f} s")
    return model_dir


def _corpora(scale: dict, data: Path, log) -> dict[str, Path]:
    from jaxsep.data.synth import synthesize_corpus

    roots = {}
    for domain in ("pop", "chorale"):
        root = data / domain
        if not (root / "corpus.json").is_file():
            stats = synthesize_corpus(root, domain=domain, seed=0, **scale[domain])
            log(f"synthesised {domain}: {stats['songs']} songs in {stats['wall_seconds']:.0f} s")
        roots[domain] = root
    return roots


def run_study(scale_name: str, out: Path, fof: Path | None, variants, log=print) -> dict:
    from jaxsep.evaluate.excerpts import compare_models, excerpt_si_sdr, summarize
    from jaxsep.modeldir import load
    from jaxsep.recipes.chimera_transfer import build_source, make_sampler, variant_config

    started = time.perf_counter()
    scale = SCALES[scale_name]
    variants = tuple(variants or scale["variants"])
    tiny = "tiny," if scale_name == "tiny" else ""
    roots = _corpora(scale, out / "data", log)
    runs = out / "runs"

    targets = {"chorale": (roots["chorale"], scale["chorale_tracks"])}
    if fof is not None:
        targets["fof"] = (fof, FOF_TRACKS)

    pretrained, curves = {}, {"pretrain": {}}
    for variant in variants:
        config = variant_config("pretrain", tiny + VARIANTS[variant])
        config.data.root = str(roots["pop"])
        workdir = runs / f"pretrain_{variant}"
        pretrained[variant] = _run(config, workdir, log)
        curves["pretrain"][variant] = eval_curve(workdir)
    pretrain_steps = config.num_steps

    results = {
        "scale": scale_name,
        "domains": list(targets),
        "variants": list(variants),
        "num_excerpts": scale["num_excerpts"],
        "scores": {},
        "comparisons": {},
        "curves": curves,
    }
    for domain, (root, tracks) in targets.items():
        models = {}
        config = variant_config("scratch", tiny + domain)
        config.data.root, config.data.valid_tracks = str(root), tracks["valid"]
        models["scratch"] = _run(config, runs / f"{domain}_scratch", log)
        curves[domain] = {"scratch": eval_curve(runs / f"{domain}_scratch")}
        for variant in variants:
            for kind in ("whole", "mask"):
                config = variant_config("finetune", f"{tiny}{domain},{kind}")
                config.data.root, config.data.valid_tracks = str(root), tracks["valid"]
                config.pretrained = str(pretrained[variant])
                name = f"{variant}/{kind}"
                workdir = runs / f"{domain}_{variant}_{kind}"
                models[name] = _run(config, workdir, log)
                curves[domain][name] = {**eval_curve(workdir), "offset": pretrain_steps}
        test_config = variant_config("scratch", tiny + domain)
        test_config.data.root = str(root)
        sampler = make_sampler(
            test_config,
            build_source(test_config, test_config.data.valid_split, tracks["test"]),
            coherent=True,
        )
        scores = {}
        for name, model_dir in models.items():
            start = time.perf_counter()
            scores[name] = excerpt_si_sdr(
                load(model_dir), sampler, scale["num_excerpts"], seed=0, batch_size=8
            )
            log(f"scored {domain} {name} in {time.perf_counter() - start:.0f} s")
        results["scores"][domain] = {name: summarize(s) for name, s in scores.items()}
        results["comparisons"][domain] = {
            name: compare_models(s, scores["scratch"])
            for name, s in scores.items()
            if name != "scratch"
        }
    results["wall_seconds"] = time.perf_counter() - started
    return results


def _finite(results: dict) -> dict:
    """NaN/inf -> None so results.json is strict JSON."""
    if isinstance(results, dict):
        return {k: _finite(v) for k, v in results.items()}
    if isinstance(results, list):
        return [_finite(v) for v in results]
    if isinstance(results, float) and not math.isfinite(results):
        return None
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="tiny")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--fof", type=Path, default=None, help="Frets-on-Fire songs folder")
    parser.add_argument("--variants", default="", help=f"subset of {','.join(VARIANTS)}")
    args = parser.parse_args(argv)
    from jaxsep.errors import JaxsepError

    variants = [v for v in args.variants.split(",") if v]
    try:
        unknown = [v for v in variants if v not in VARIANTS]
        if unknown:
            raise JaxsepError(f"--variants: unknown {unknown} (known: {', '.join(VARIANTS)})")
        if args.fof is not None and not args.fof.is_dir():
            raise JaxsepError(f"{args.fof}: Frets-on-Fire folder not found")
        results = run_study(args.scale, args.out, args.fof, variants)
    except JaxsepError as e:
        print(f"transfer_study: {e}", file=sys.stderr)
        return 2
    for path in write_report(_finite(results), args.out):
        print(path)
    print((args.out / "table.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())

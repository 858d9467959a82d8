"""SDR table of the four X-UMX + VGGish methods (baseline, Concat, Con-Reg, Dis-Reg) on one split.

Every method trains the demo-sized X-UMX (``jaxsep.demo.demo_config``: hidden 64, one BLSTM
layer, STFT 1024/256, batch 4 x 2 s) for the same number of steps, from the same seed, on the
same synthetic pop corpus; then each model separates the same test songs through the
:class:`~jaxsep.separate.Separator` (masks -> one Wiener iteration -> iSTFT) and is scored with
the MDX SDR next to the mixture-as-estimate baseline. The table (``table.md``) and per-song
scores (``scores.json``) go to ``--out``.

    python tools/xumx_method_table.py --out benchmarks/xumx_methods_tiny --steps 300

VGGish is random-initialised unless ``--vggish-dir`` names a converted model directory
(``jaxsep convert vggish``): the public weights cannot be downloaded on the CI machine, so
there the table measures the recipe's mechanics, not the benefit of a pre-trained embedding.
A finished method's run is reused (delete its folder under ``--out`` to retrain).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from jaxsep.demo import (
    CORPUS,
    _make_corpus,
    _record_separation,
    demo_config,
    median_sdr,
    read_metrics,
    separate_and_score,
)
from jaxsep.recipes import xumx_vggish

METHODS = ("baseline", "concat", "conreg", "disreg")


def train_and_score(method: str, corpus: Path, out: Path, steps: int, vggish_dir: str) -> dict:
    config = demo_config(corpus, steps)
    config.method = method
    config.transfer.vggish_dir = vggish_dir
    config.checkpoint_every = steps  # one checkpoint: the end of the run
    start = time.perf_counter()
    model_dir = xumx_vggish.train(config, out / method)
    _record_separation(model_dir, config.separation)
    train_seconds = time.perf_counter() - start
    rows = separate_and_score(model_dir, corpus)
    _, evals = read_metrics(out / method / "metrics.jsonl")
    return {
        "method": method,
        "steps": steps,
        "batch": int(config.batch_size),
        "seconds": float(config.data.seconds),
        "train_wall_s": train_seconds,
        "final_eval_loss": evals[-1]["loss"] if evals else None,
        "rows": rows,
    }


def table(results: list[dict], corpus: dict, vggish_dir: str) -> str:
    stems = list(results[0]["rows"][0]["sdr"])
    mixture = median_sdr(results[0]["rows"])
    lines = [
        "# X-UMX + VGGish: SDR by method (synthetic pop corpus)",
        "",
        f"Corpus: {corpus['songs']} synthetic pop songs x {corpus['seconds']:g} s (seed "
        f"{corpus['seed']}), {len(results[0]['rows'])} test songs. Each method: "
        f"{results[0]['steps']} steps of batch {results[0]['batch']} x "
        f"{results[0]['seconds']:g} s, same seed; demo-size X-UMX (hidden 64, 1 BLSTM layer, "
        "STFT 1024/256); separation with one Wiener iteration. VGGish: "
        + (
            f"converted weights from `{vggish_dir}`."
            if vggish_dir
            else "random init (no public "
            "weights offline), so this shows the mechanics, not the transfer benefit."
        )
        + " SDR: MDX definition, dB, median over test songs.",
        "",
        "| method | " + " | ".join(stems) + " | mean | final validation loss | train wall s |",
        "|---|" + "---|" * (len(stems) + 3),
        "| mixture as estimate | "
        + " | ".join(f"{mixture[s][1]:.2f}" for s in stems)
        + f" | {np.mean([mixture[s][1] for s in stems]):.2f} | – | – |",
    ]
    for result in results:
        medians = median_sdr(result["rows"])
        values = [medians[s][0] for s in stems]
        loss = result["final_eval_loss"]
        lines.append(
            f"| {result['method']} | "
            + " | ".join(f"{v:.2f}" for v in values)
            + f" | {np.mean(values):.2f} | {'–' if loss is None else f'{loss:.4g}'} | "
            f"{result['train_wall_s']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--songs", type=int, default=16)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--vggish-dir", default="")
    args = parser.parse_args()
    corpus = CORPUS | {"songs": args.songs, "test_fraction": 0.25}
    args.out.mkdir(parents=True, exist_ok=True)
    _make_corpus(args.out / "corpus", corpus)
    results = []
    for method in args.methods.split(","):
        cached = args.out / method / "result.json"
        if cached.exists():
            results.append(json.loads(cached.read_text()))
            continue
        result = train_and_score(method, args.out / "corpus", args.out, args.steps, args.vggish_dir)
        cached.write_text(json.dumps(result, indent=2))
        results.append(result)
        print(f"{method}: trained in {result['train_wall_s']:.0f} s", flush=True)
    (args.out / "scores.json").write_text(json.dumps(results, indent=2))
    (args.out / "table.md").write_text(table(results, corpus, args.vggish_dir))
    print((args.out / "table.md").read_text())


if __name__ == "__main__":
    main()

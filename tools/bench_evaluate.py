"""Wall time and peak memory of `jaxsep evaluate` over a test split of long songs, per
`--host-malloc` setting.

Writes a test split of tone-and-noise songs of the lengths `--songs` gives (seconds, scored in
that order) and a short train split (`jaxsep.bench.pipeline.write_corpus`), trains the model of
`--config` for 2 steps (the cost of separating and scoring does not depend on the weights), then
runs `jaxsep --compile-cache off --host-malloc WAY evaluate` once per way of `--ways`, each in a
fresh process, and reads that process's peak resident memory. Prints one JSON record (per way:
wall seconds, peak resident GB; the scores must agree between ways); `-o FILE` appends it.

    .venv/bin/python tools/bench_evaluate.py --songs 122,389,215 [--ways retain,system] \
        [--config configs/xumx.py] [--bsseval jax] [-o benchmarks/results/cpu/evaluate.jsonl]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from jaxsep.bench import harness
from jaxsep.bench.commands import run_jaxsep, short_train_args
from jaxsep.bench.pipeline import write_corpus


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--songs",
        type=lambda text: [float(x) for x in text.split(",")],
        required=True,
        help="comma-separated test song lengths in seconds",
    )
    parser.add_argument("--ways", default="retain,system", help="--host-malloc settings to run")
    parser.add_argument("--config", default="configs/xumx.py")
    parser.add_argument("--bsseval", default="jax", choices=("jax", "museval"))
    parser.add_argument("-o", "--out", type=Path, help="append the JSON record to this file")
    args = parser.parse_args()
    ways = args.ways.split(",")
    load_start = harness.load_average()
    record = {
        "bench": "evaluate",
        "signals": (
            f"{len(args.songs)} songs of {min(args.songs):g}-{max(args.songs):g} s "
            f"({sum(args.songs) / 60:.0f} min), 4 stereo stems, 44.1 kHz"
        ),
        "song_seconds": args.songs,
        "config": args.config,
        "bsseval": args.bsseval,
        "device": f"{harness.cpu_model_name()}",
    }
    medians = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        corpus = tmp / "corpus"
        write_corpus(corpus / "train", songs=3, seconds=8.0)
        write_corpus(corpus / "test", songs=len(args.songs), seconds=args.songs)
        workdir = tmp / "run"
        run_jaxsep("--compile-cache", "off", *short_train_args(args.config, corpus, workdir, 2))
        for way in ways:
            out = tmp / f"eval-{way}"
            seconds, peak_gb = run_jaxsep(
                "--compile-cache", "off", "--host-malloc", way, "evaluate",
                "--model", str(workdir / "model"), "--data", str(corpus), "-o", str(out),
                "--bsseval", args.bsseval,
            )  # fmt: skip
            record[f"{way}_s"] = round(seconds, 1)
            record[f"{way}_peak_rss_gb"] = round(peak_gb, 2)
            medians[way] = json.loads((out / "summary.json").read_text())["median"]
            print(way, record[f"{way}_s"], record[f"{way}_peak_rss_gb"], flush=True)
    if any(m != medians[ways[0]] for m in medians.values()):
        raise SystemExit(f"the ways scored differently: {medians}")
    import jax

    record |= {"load_avg_start": load_start, "jax_version": jax.__version__}
    harness.finish_tool_record(record, args.out)


if __name__ == "__main__":
    main()

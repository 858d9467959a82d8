"""`jaxsep` command line: parses arguments, calls the library, nothing else.

Every command exits 0 on success and 2 with one line on stderr for bad input (a JaxsepError).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from jaxsep.errors import JaxsepError

NOT_BUILT: dict[str, str] = {}


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors in one line with exit 2 (no usage dump)."""

    def error(self, message: str) -> None:  # noqa: D401
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="jaxsep", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--host-malloc",
        choices=("retain", "system"),
        default="retain",
        help="retain: keep freed host memory for the next step (XLA:CPU re-faults its temporaries "
        "every call otherwise; jaxsep.host_memory); system: glibc's defaults",
    )
    parser.add_argument(
        "--compile-cache",
        metavar="DIR|off",
        default=None,
        help="keep compiled XLA programs in DIR for later runs (default: $JAXSEP_COMPILE_CACHE, "
        "else ~/.cache/jaxsep/xla; jaxsep.compile_cache); off: compile in every run. "
        "`bench` never uses it: it times compiles",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("synth", help="generate a synthetic multi-stem corpus in MUSDB18-HQ layout")
    p.add_argument("out", type=Path, help="output root (train/ and test/ are created inside)")
    p.add_argument("--songs", type=int, default=8, help="number of songs (pop) or chorales")
    p.add_argument("--seconds", type=float, default=10.0, help="length of each song in seconds")
    p.add_argument("--domain", choices=("pop", "chorale"), default="pop")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1, help="rendering processes")
    p.add_argument("--test-fraction", type=float, default=0.25)
    p.add_argument(
        "--soundfonts",
        default=None,
        help="comma-separated GM soundfonts (names in /usr/share/sounds/sf2 or paths), one drawn "
        "per stem; default TimGM6mb",
    )

    p = sub.add_parser("train", help="train a model from a config file")
    p.add_argument("--config", required=True, help="configs/NAME.py[:variant]")
    p.add_argument("--workdir", required=True, type=Path)
    p.add_argument(
        "--data", type=Path, default=None, help="dataset root (overrides config.data.root)"
    )
    p.add_argument("--distributed", action="store_true", help="call jax.distributed.initialize()")

    p = sub.add_parser("separate", help="separate audio files with a trained model")
    p.add_argument("tracks", nargs="+", type=Path, help="audio files (wav, flac, ogg, mp3, ...)")
    p.add_argument("--model", required=True, type=Path, help="model directory")
    p.add_argument("-o", "--out", type=Path, default=Path("separated"), help="output folder")
    p.add_argument(
        "--segment", type=float, default=None, help="seconds per chunk (default: model's or 10)"
    )
    p.add_argument("--overlap", type=float, default=0.25, help="fraction shared by neighbours")
    p.add_argument("--batch-size", type=int, default=8, help="chunks per device call")
    p.add_argument("--device", choices=("cpu", "gpu", "tpu"), default=None)
    p.add_argument("--ext", choices=("wav", "flac"), default="wav", help="output format")
    p.add_argument(
        "--filename",
        default="{track}/{stem}.{ext}",
        help="output path template under OUT with {track}, {stem}, {ext}",
    )

    p = sub.add_parser("evaluate", help="BSSEval v4 scores of a model on a dataset")
    p.add_argument("--model", required=True, type=Path, help="model directory")
    p.add_argument("--data", required=True, type=Path, help="MUSDB18-HQ-layout root")
    p.add_argument("--split", choices=("test", "train", "valid"), default="test")
    p.add_argument("-o", "--out", type=Path, default=None, help="default: MODEL/eval")
    p.add_argument("--segment", type=float, default=None)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", choices=("cpu", "gpu", "tpu"), default=None)
    p.add_argument(
        "--baseline", action="store_true", help="also score the mixture as every estimate"
    )
    p.add_argument(
        "--bsseval",
        choices=("jax", "museval"),
        default="jax",
        help="scorer: jax (museval's scores, many times faster; default) or museval itself",
    )

    p = sub.add_parser("convert", help="convert a PyTorch checkpoint to a jaxsep model directory")
    p.add_argument("kind", choices=("jukebox", "xumx", "umx", "vggish", "chimera"))
    p.add_argument("src", type=Path, help="checkpoint file (or open-unmix model folder)")
    p.add_argument("out", type=Path, help="model directory to write")
    p.add_argument("--levels", default=None, help="jukebox: levels to keep, e.g. 0 (the paper's)")
    p.add_argument("--pca", type=Path, default=None, help="vggish: vggish_pca_params-*.pth")
    p.add_argument(
        "--tf-embedding",
        action="store_true",
        help="vggish: TF embedding (no final ReLU) instead of torchvggish's",
    )
    p.add_argument("--targets", default=None, help="umx: comma-separated targets to load")

    p = sub.add_parser("bench", help="JAX vs PyTorch throughput benchmark")
    p.add_argument(
        "model", choices=("xumx", "umx", "chimera", "vqvae", "vggish", "pipeline", "all")
    )
    p.add_argument(
        "--size",
        choices=("tiny", "cpu", "paper"),
        default=None,
        help="model/batch sizes (default: paper on a GPU, cpu on a CPU; see benchmarks/README.md)",
    )
    p.add_argument("--device", choices=("cpu", "gpu"), default=None, help="default: gpu if any")
    p.add_argument("--batch-size", type=int, default=None, help="override the size's batch")
    p.add_argument("--steps", type=int, default=10, help="timed repetitions (>= 10 to report)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls before timing")
    p.add_argument(
        "--threads", type=int, default=None, help="CPU threads (1 = pinned single thread)"
    )
    p.add_argument(
        "--jax-variants",
        "--jax-lstm",
        dest="jax_variants",
        default=None,
        help="JAX variants: LSTM backends scan,cudnn; VQ-VAE xla,remat (default: every usable "
        "LSTM backend; VQ-VAE remat on GPUs only)",
    )
    p.add_argument(
        "--torch-variants",
        default=None,
        help="eager,compile (default: both on GPU, eager on CPU)",
    )
    p.add_argument("--precision", choices=("fp32", "tf32", "bf16"), default="fp32")
    p.add_argument("--workers", default=None, help="pipeline: grain worker counts, e.g. 0,1,2")
    p.add_argument(
        "--data",
        type=Path,
        default=None,
        help="pipeline: time this corpus (stem folders, MUSDB18-HQ, MUSDB18 .stem.mp4) "
        "instead of a generated one",
    )
    p.add_argument(
        "-o", "--out", type=Path, default=None, help="JSONL file (default: benchmarks/results/...)"
    )

    p = sub.add_parser("demo", help="the main job on an embedded default corpus")
    p.add_argument("--workdir", type=Path, default=Path("demo_run"))
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the demo's)")
    return parser


def _run(args: argparse.Namespace, extra: list[str], argv: list[str] = ()) -> int:
    if args.command in NOT_BUILT:
        raise JaxsepError(NOT_BUILT[args.command])
    if args.command != "bench":  # the bench's compile_s times real compiles
        from jaxsep.compile_cache import enable_compile_cache, resolve_cache_root

        cache_root = resolve_cache_root(args.compile_cache)
        if cache_root is not None:
            enable_compile_cache(cache_root)
    if args.command == "synth":
        from jaxsep.data.synth import synthesize_corpus

        stats = synthesize_corpus(
            args.out,
            songs=args.songs,
            seconds=args.seconds,
            domain=args.domain,
            seed=args.seed,
            workers=args.workers,
            test_fraction=args.test_fraction,
            soundfonts=args.soundfonts.split(",") if args.soundfonts else None,
        )
        print(
            f"wrote {stats['songs']} {args.domain} songs ({stats['audio_seconds']:.0f} s of audio) "
            f"to {args.out} in {stats['wall_seconds']:.1f} s"
        )
        return 0
    if args.command == "train":
        from jaxsep.config import load_config

        bad = [e for e in extra if not e.startswith("--config.")]
        if bad:
            raise JaxsepError(f"train: unrecognized arguments: {' '.join(bad)}")
        config = load_config(args.config, extra)
        from jaxsep.train.mesh import maybe_initialize_distributed

        maybe_initialize_distributed(args.distributed)
        if args.data is not None:
            config.data.root = str(args.data)
        from jaxsep.recipes import train_recipe

        train_recipe(config, args.workdir)
        return 0
    if args.command == "separate":
        from jaxsep.separate import separate_files

        written = separate_files(
            args.tracks,
            args.model,
            args.out,
            filename=args.filename,
            ext=args.ext,
            segment=args.segment,
            overlap=args.overlap,
            batch_size=args.batch_size,
            devices=args.device,
        )
        print(f"wrote {len(written)} stem files for {len(args.tracks)} track(s) to {args.out}")
        return 0
    if args.command == "evaluate":
        from jaxsep.evaluate.report import evaluate_model

        summary = evaluate_model(
            args.model,
            args.data,
            split=args.split,
            out_dir=args.out,
            baseline=args.baseline,
            segment=args.segment,
            batch_size=args.batch_size,
            devices=args.device,
            bsseval=args.bsseval,
        )
        print(summary["table"], end="")
        print(f"wrote {len(summary['tracks'])} track scores and summary.md to {summary['out']}")
        return 0
    if args.command == "convert":
        from jaxsep.convert import convert_to_model_dir

        out = convert_to_model_dir(
            args.kind,
            args.src,
            args.out,
            levels=args.levels,
            pca=args.pca,
            tf_embedding=args.tf_embedding,
            targets=args.targets.split(",") if args.targets else None,
        )
        print(f"wrote {args.kind} model directory {out}")
        return 0
    if args.command == "bench":
        from jaxsep.bench.runner import run_bench
        from jaxsep.bench.table import render_table

        def split(text, cast=str):
            try:
                return None if text is None else tuple(cast(v) for v in text.split(",") if v)
            except ValueError as e:
                raise JaxsepError(f"bad comma-separated list {text!r}: {e}") from None

        records = run_bench(
            args.model,
            size=args.size,
            device=args.device,
            batch_size=args.batch_size,
            reps=args.steps,
            warmup=args.warmup,
            threads=args.threads,
            jax_variants=split(args.jax_variants),
            torch_variants=split(args.torch_variants),
            precision=args.precision,
            out=args.out,
            command=" ".join(["jaxsep", *argv]),
            pipeline_workers=split(args.workers, int),
            pipeline_data=args.data,
        )
        print(render_table(records), end="")
        return 0
    if args.command == "demo":
        from jaxsep.demo import run_demo

        report = run_demo(args.workdir, steps=args.steps)
        print(f"demo report: {report}")
        return 0
    raise JaxsepError(f"unknown command {args.command}")  # argparse prevents this


def _drop_closed_event_loop_reports() -> None:
    """Keep a failed command's stderr to its one line: when orbax gives up on a damaged
    checkpoint, tensorstore reads still in flight complete onto orbax's closed asyncio loop and
    Python reports each `RuntimeError('Event loop is closed')` as an unraisable exception (a
    traceback per read, printed around the error). Only that report is dropped."""
    previous = sys.unraisablehook
    if getattr(previous, "drops_closed_event_loop_reports", False):
        return  # already installed (main() called again in this process)

    def hook(report: sys.UnraisableHookArgs) -> None:
        value = report.exc_value
        if isinstance(value, RuntimeError) and str(value) == "Event loop is closed":
            return
        previous(report)

    hook.drops_closed_event_loop_reports = True
    sys.unraisablehook = hook


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "train":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.host_malloc == "retain":  # a no-op once JAX has started in this process
        from jaxsep.host_memory import retain_freed_memory

        retain_freed_memory()
    _drop_closed_event_loop_reports()
    try:
        return _run(args, extra, argv)
    except JaxsepError as e:
        sys.stderr.write(f"jaxsep {args.command}: error: {e}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("jaxsep: interrupted\n")
        return 130


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    raise SystemExit(main())

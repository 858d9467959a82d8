"""Host data-pipeline throughput (examples/s): augmentation off / gain+swap / +pitch+stretch,
in-process vs grain worker processes. Prints one JSON line per setting to stdout.

    .venv/bin/python tools/bench_pipeline.py [--data ROOT] [--seconds 6] [--workers 0,1,2]

Without ``--data`` a small corpus of 4 songs (4 stereo stems of tones + noise) is written to a
temporary folder. Quick by design: a few batches after one warm-up batch per setting.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path

from jaxsep.bench.pipeline import STEMS, pipeline_rate, write_corpus
from jaxsep.data.augment import Augmentation
from jaxsep.data.mixing import ExcerptSampler
from jaxsep.data.tracks import StemFolderSource

MODES = {
    "off": Augmentation(),
    "gain_swap": Augmentation(gain=True, channel_swap=True),
    "pitch_stretch": Augmentation(
        gain=True, channel_swap=True, pitch_shift=True, time_stretch=True
    ),
}


def measure(sampler, mode: str, workers: int, batch_size: int, batches: int) -> dict:
    rate, cpu_per_example = pipeline_rate(sampler, MODES[mode], workers, batch_size, batches)
    return {
        "bench": "pipeline",
        "augment": mode,
        "workers": workers,
        "seconds": sampler.frames / sampler.sample_rate,
        "stems": len(STEMS),
        "batch_size": batch_size,
        "batches": batches,
        "examples_per_s": round(rate, 2),
        "main_process_cpu_s_per_example": round(cpu_per_example, 4),
        "cpus": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="folder of stem folders (default: synthetic)")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--workers", default="0,1,2")
    parser.add_argument("--modes", default=",".join(MODES))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.data
        if root is None:
            root = Path(tmp)
            write_corpus(root, songs=4, seconds=30.0)
        source = StemFolderSource(root, stems=STEMS)
        sampler = ExcerptSampler(source, seconds=args.seconds)
        for mode in args.modes.split(","):
            for workers in (int(w) for w in args.workers.split(",")):
                result = measure(sampler, mode, workers, args.batch_size, args.batches)
                print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()

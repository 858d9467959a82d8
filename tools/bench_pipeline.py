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
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from jaxsep.data.augment import Augmentation
from jaxsep.data.mixing import ExcerptSampler
from jaxsep.data.pipeline import batch_dataset, make_dataset
from jaxsep.data.tracks import StemFolderSource

STEMS = ("drums", "bass", "other", "vocals")
MODES = {
    "off": Augmentation(),
    "gain_swap": Augmentation(gain=True, channel_swap=True),
    "pitch_stretch": Augmentation(
        gain=True, channel_swap=True, pitch_shift=True, time_stretch=True
    ),
}


def write_corpus(root: Path, songs: int = 4, seconds: float = 30.0, sr: int = 44100) -> None:
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sr)) / sr
    for k in range(songs):
        folder = root / f"song{k}"
        folder.mkdir(parents=True)
        for s, name in enumerate(STEMS):
            tone = np.sin(2 * np.pi * 110 * (s + 1) * (1 + 0.01 * k) * t)
            audio = 0.2 * (tone[:, None] + 0.05 * rng.standard_normal((t.size, 2)))
            sf.write(folder / f"{name}.wav", audio.astype(np.float32), sr, subtype="PCM_16")


def measure(sampler, mode: str, workers: int, batch_size: int, batches: int) -> dict:
    dataset = make_dataset(sampler, seed=0, augment=MODES[mode])
    iterator = iter(
        batch_dataset(
            dataset,
            global_batch_size=batch_size,
            process_index=0,
            process_count=1,
            workers=workers,
        )
    )
    next(iterator)  # warm-up: worker start, librosa's lazy imports and caches
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    for _ in range(batches):
        next(iterator)
    wall = time.perf_counter() - start_wall
    cpu = time.process_time() - start_cpu
    if hasattr(iterator, "close"):
        iterator.close()
    examples = batches * batch_size
    return {
        "bench": "pipeline",
        "augment": mode,
        "workers": workers,
        "seconds": sampler.frames / sampler.sample_rate,
        "stems": len(STEMS),
        "batch_size": batch_size,
        "batches": batches,
        "examples_per_s": round(examples / wall, 2),
        "main_process_cpu_s_per_example": round(cpu / examples, 4),
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
            write_corpus(root)
        source = StemFolderSource(root, stems=STEMS)
        sampler = ExcerptSampler(source, seconds=args.seconds)
        for mode in args.modes.split(","):
            for workers in (int(w) for w in args.workers.split(",")):
                result = measure(sampler, mode, workers, args.batch_size, args.batches)
                print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()

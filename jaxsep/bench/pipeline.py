"""Data-pipeline benchmark: grain examples/s (MUSDB-style 4-stem stereo excerpts from WAV files)
with 0..N worker processes, augmentation off / on, against what a train step consumes.

The excerpt length is the X-UMX case's at the same size (1 s at ``cpu``, 6 s at ``paper``), so
``headroom = pipeline examples/s / train-step examples/s`` compares like with like; above 1 the
pipeline keeps up with that model's training step.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxsep.bench import harness

STEMS = ("drums", "bass", "other", "vocals")
SAMPLE_RATE = 44100
# Per size: corpus (songs x seconds), batch, batches timed, default workers.
SIZES = {
    "tiny": dict(songs=2, song_seconds=2.0, seconds=0.25, batch=2, batches=2, workers=(0,)),
    "cpu": dict(songs=4, song_seconds=20.0, seconds=1.0, batch=4, batches=8, workers=(0, 1, 2)),
    "paper": dict(
        songs=8, song_seconds=60.0, seconds=6.0, batch=16, batches=8, workers=(0, 2, 4, 8)
    ),
}


def write_corpus(root: Path, songs: int, seconds: float, sr: int = SAMPLE_RATE) -> None:
    """Songs of 4 stereo stems (tones plus noise) as 16-bit WAV, in MUSDB18-HQ layout."""
    import soundfile as sf

    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sr)) / sr
    for k in range(songs):
        folder = root / f"song{k}"
        folder.mkdir(parents=True)
        for s, name in enumerate(STEMS):
            tone = np.sin(2 * np.pi * 110 * (s + 1) * (1 + 0.01 * k) * t)
            audio = 0.2 * (tone[:, None] + 0.05 * rng.standard_normal((t.size, 2)))
            sf.write(folder / f"{name}.wav", audio.astype(np.float32), sr, subtype="PCM_16")


def pipeline_rate(sampler, augment, workers: int, batch: int, batches: int) -> tuple[float, float]:
    """`(examples/s, main-process CPU seconds per example)` of the grain pipeline, timed over
    `batches` batches after one warm-up batch (worker start-up, lazy imports)."""
    from jaxsep.data.pipeline import batch_dataset, make_dataset

    dataset = make_dataset(sampler, seed=0, augment=augment)
    iterator = iter(
        batch_dataset(
            dataset, global_batch_size=batch, process_index=0, process_count=1, workers=workers
        )
    )
    next(iterator)
    start, start_cpu = time.perf_counter(), time.process_time()
    for _ in range(batches):
        next(iterator)
    seconds, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    if hasattr(iterator, "close"):
        iterator.close()
    examples = batches * batch
    return examples / seconds, cpu / examples


def bench_pipeline(
    *,
    size: str,
    workers: Sequence[int] | None = None,
    consumption: dict[str, float] | None = None,
    env: dict[str, Any] | None = None,
) -> list[dict]:
    """One record per (augmentation, workers): examples/s and headroom over each train step."""
    from jaxsep.data.augment import Augmentation
    from jaxsep.data.mixing import ExcerptSampler
    from jaxsep.data.tracks import StemFolderSource

    s = SIZES[size]
    modes = {"off": Augmentation(), "gain_swap": Augmentation(gain=True, channel_swap=True)}
    consumption = dict(consumption or {})
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        write_corpus(Path(tmp), s["songs"], s["song_seconds"])
        sampler = ExcerptSampler(StemFolderSource(tmp, stems=STEMS), seconds=s["seconds"])
        for mode, augment in modes.items():
            for n in workers if workers is not None else s["workers"]:
                load_start = harness.load_average()
                rate, _ = pipeline_rate(sampler, augment, n, s["batch"], s["batches"])
                record = {
                    "bench": "pipeline",
                    "model": "pipeline",
                    "size": size,
                    "augment": mode,
                    "workers": n,
                    "batch_size": s["batch"],
                    "batches": s["batches"],
                    "audio_seconds_per_example": s["seconds"],
                    "examples_per_s": rate,
                    "audio_seconds_per_s": rate * s["seconds"],
                    "train_examples_per_s": consumption,
                    "headroom": {m: rate / c for m, c in consumption.items() if c},
                    "load_avg_start": load_start,
                }
                record.update(env or {})
                record["load_avg_end"] = harness.load_average()
                records.append(record)
    return records

"""Data-pipeline benchmark: grain examples/s with 0..N worker processes, augmentation off / on,
against what each model's train step consumes.

Two pipelines, each the one its recipe trains on: X-UMX/UMX's 4-stem stereo 44.1 kHz excerpts
(augmentation off, or gain + channel swap), and ChimeraNet's (the chimera_transfer recipe's own
source: stems averaged to mono, resampled to 16 kHz with soxr, grouped as vocals /
accompaniment; coherent, incoherent, or coherent with librosa pitch-shift + time-stretch). The
excerpt length and batch are the model case's at the same size, so ``headroom = pipeline
examples/s / train-step examples/s`` compares like with like; above 1 the pipeline keeps up.
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
# Per size: corpus (songs x seconds), batches timed, default workers, and per pipeline the
# excerpt seconds and batch of the model case it feeds (jaxsep.bench.cases).
SIZES = {
    "tiny": dict(
        songs=2, song_seconds=2.0, batches=2, workers=(0,),
        xumx=dict(seconds=0.25, batch=2), chimera=dict(seconds=0.25, batch=2),
    ),
    "cpu": dict(
        songs=4, song_seconds=20.0, batches=8, workers=(0, 1, 2),
        xumx=dict(seconds=1.0, batch=4), chimera=dict(seconds=1.0, batch=2),
    ),
    "paper": dict(
        songs=8, song_seconds=60.0, batches=8, workers=(0, 2, 4, 8, 15),
        xumx=dict(seconds=6.0, batch=16), chimera=dict(seconds=10.0, batch=24),
    ),
}  # fmt: skip
# The train steps each pipeline feeds (their examples/s are the consumption rates).
CONSUMERS = {"xumx": ("xumx", "umx"), "chimera": ("chimera",)}


def write_corpus(
    root: Path, songs: int, seconds: float | Sequence[float], sr: int = SAMPLE_RATE
) -> None:
    """Songs of 4 stereo stems (tones plus noise) as 16-bit WAV, in MUSDB18-HQ layout; `seconds`
    is every song's length or one length per song."""
    import soundfile as sf

    lengths = [seconds] * songs if np.isscalar(seconds) else list(seconds)
    if len(lengths) != songs:
        raise ValueError(f"write_corpus: {songs} songs but {len(lengths)} lengths")
    rng = np.random.default_rng(0)
    for k, song_seconds in enumerate(lengths):
        t = np.arange(int(song_seconds * sr)) / sr
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


def _samplers(root: Path, pipeline: str, seconds: float) -> dict[str, tuple[Any, Any]]:
    """`{mode: (sampler, augmentation)}` of one pipeline over the corpus at `root`."""
    from jaxsep.data.augment import Augmentation
    from jaxsep.data.mixing import ExcerptSampler
    from jaxsep.data.tracks import StemFolderSource

    if pipeline == "xumx":
        sampler = ExcerptSampler(StemFolderSource(root, stems=STEMS), seconds=seconds)
        gain_swap = Augmentation(gain=True, channel_swap=True)
        return {"off": (sampler, Augmentation()), "gain_swap": (sampler, gain_swap)}
    from jaxsep.recipes import chimera_transfer as recipe

    config = recipe.default_config()
    config.data.root, config.data.seconds = str(root), seconds
    source = recipe.build_source(config, "")  # mono, 16 kHz, vocals / accompaniment
    coherent = recipe.make_sampler(config, source, coherent=True)
    pitch_stretch = Augmentation(pitch_shift=True, time_stretch=True)  # as the recipe builds it
    return {
        "off": (coherent, Augmentation()),
        "incoherent": (recipe.make_sampler(config, source, coherent=False), Augmentation()),
        "pitch_stretch": (coherent, pitch_stretch),
    }


def _unavailable(augment: Any) -> str | None:
    """Why `augment` cannot run here, if it cannot: pitch-shift and time-stretch need librosa,
    which a GPU host may lack (tools/gpu_session.sh says which wheels to carry)."""
    if not (augment.pitch_shift or augment.time_stretch):
        return None
    try:
        import librosa  # noqa: F401
    except ImportError as e:
        return f"pitch-shift / time-stretch need librosa ({type(e).__name__}: {e})"
    return None


def bench_pipeline(
    *,
    size: str,
    workers: Sequence[int] | None = None,
    consumption: dict[str, float] | None = None,
    env: dict[str, Any] | None = None,
    data: Path | None = None,
) -> list[dict]:
    """One record per (pipeline, augmentation, workers): examples/s and the headroom over each
    train step it feeds. `data`: read this corpus (stem folders, MUSDB18-HQ or MUSDB18
    ``.stem.mp4``, all tracks under it) instead of a generated one of WAVs."""
    s = SIZES[size]
    consumption = dict(consumption or {})
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        if data is None:
            root = Path(tmp)
            write_corpus(root, s["songs"], s["song_seconds"])
            corpus = "synthetic"  # `write_corpus`: SIZES' songs x seconds of 16-bit WAV
        else:
            root, corpus = Path(data), str(data)
        for pipeline, consumers in CONSUMERS.items():
            seconds, batch = s[pipeline]["seconds"], s[pipeline]["batch"]
            rates = {m: c for m, c in consumption.items() if m in consumers}
            for mode, (sampler, augment) in _samplers(root, pipeline, seconds).items():
                for n in workers if workers is not None else s["workers"]:
                    load_start = harness.load_average()
                    error = _unavailable(augment)
                    rate = None
                    if error is None:
                        rate, _ = pipeline_rate(sampler, augment, n, batch, s["batches"])
                    record = {
                        "bench": "pipeline",
                        "model": "pipeline",
                        "pipeline": pipeline,
                        "corpus": corpus,
                        "size": size,
                        "augment": mode,
                        "workers": n,
                        "batch_size": batch,
                        "batches": s["batches"],
                        "audio_seconds_per_example": seconds,
                        "examples_per_s": rate,
                        "audio_seconds_per_s": rate * seconds if rate else None,
                        "error": error,
                        "train_examples_per_s": rates,
                        "headroom": {m: rate / c for m, c in rates.items() if c and rate},
                        "load_avg_start": load_start,
                    }
                    record.update(env or {})
                    record["load_avg_end"] = harness.load_average()
                    records.append(record)
    return records

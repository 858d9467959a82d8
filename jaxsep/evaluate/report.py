"""Evaluate a model directory on a MUSDB-layout subset (`jaxsep evaluate`).

Every track is separated with :class:`jaxsep.separate.Separator` and scored with museval's
BSSEval v4 (1 s windows and hops, as SiSEC/MUSDB report). Output, museval-like so existing
aggregation scripts read it:

    OUT/<split>/<track>.json   {"name", "targets": [{"name", "frames": [{"time", "duration",
                                "metrics": {"SDR", "SIR", "SAR", "ISR"}}]}]}  (NaN frames -> null)
    OUT/summary.json           median per source (median over frames, then over tracks)
    OUT/summary.md             the same as a markdown table, plus a mixture-as-estimate baseline
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path

import numpy as np

from jaxsep.data.tracks import MusdbSource
from jaxsep.errors import JaxsepError
from jaxsep.evaluate.metrics import BSSEVAL_BACKENDS, bss_eval
from jaxsep.modeldir import load

METRICS = ("SDR", "SIR", "SAR", "ISR")
SPLITS = {"test": ("test", None), "train": ("train", "train"), "valid": ("train", "valid")}
WINDOW_SECONDS = 1.0


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def track_json(name: str, sources: tuple[str, ...], framewise: dict[str, np.ndarray]) -> dict:
    """museval-style per-track scores from ``{"SDR": [S, frames], ...}``."""
    frames = framewise["SDR"].shape[1]
    targets = []
    for s, source in enumerate(sources):
        targets.append(
            {
                "name": source,
                "frames": [
                    {
                        "time": f * WINDOW_SECONDS,
                        "duration": WINDOW_SECONDS,
                        "metrics": {m: _finite_or_none(framewise[m][s, f]) for m in METRICS},
                    }
                    for f in range(frames)
                ],
            }
        )
    return {"name": name, "targets": targets}


def _nanmedian(values: np.ndarray, axis: int) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN -> NaN, as museval
        return np.nanmedian(values, axis=axis)


def _track_medians(framewise: dict[str, np.ndarray]) -> np.ndarray:
    """``[metrics, sources]`` medians over frames."""
    return np.stack([_nanmedian(framewise[m], axis=-1) for m in METRICS])


def summary_table(rows: dict[str, dict[str, dict[str, float]]]) -> str:
    """Markdown table: one line per (method, source), median SDR/SIR/SAR/ISR in dB."""
    lines = [
        "| method | source | " + " | ".join(f"{m} (dB)" for m in METRICS) + " |",
        "|---|---|" + "---:|" * len(METRICS),
    ]
    for method, per_source in rows.items():
        for source, scores in per_source.items():
            cells = " | ".join("nan" if scores[m] is None else f"{scores[m]:.2f}" for m in METRICS)
            lines.append(f"| {method} | {source} | {cells} |")
    return "\n".join(lines) + "\n"


def evaluate_model(
    model_dir: str | os.PathLike,
    data_root: str | os.PathLike,
    *,
    split: str = "test",
    out_dir: str | os.PathLike | None = None,
    baseline: bool = False,
    segment: float | None = None,
    overlap: float = 0.25,
    batch_size: int = 8,
    devices=None,
    show_progress: bool | None = None,
    bsseval: str = "jax",
) -> dict:
    """Score a model on ``split`` of a MUSDB-layout root; returns the summary dict.

    ``baseline`` also scores the mixture as every source's estimate (doubles BSSEval time).
    ``bsseval`` picks the scorer: "jax" (default, the same scores as museval, many times faster;
    a new track length recompiles only its length-dependent parts, ~1 s) or "museval".
    """
    from jaxsep.separate import Separator

    if split not in SPLITS:
        raise JaxsepError(f"--split {split!r}: use one of {', '.join(SPLITS)}")
    if bsseval not in BSSEVAL_BACKENDS:
        raise JaxsepError(f"--bsseval {bsseval!r}: use one of {', '.join(BSSEVAL_BACKENDS)}")
    model = load(model_dir)
    out = Path(out_dir) if out_dir is not None else Path(model_dir) / "eval"
    subset, musdb_split = SPLITS[split]
    separator = Separator(
        model, segment=segment, overlap=overlap, batch_size=batch_size, devices=devices
    )
    source = MusdbSource(
        data_root,
        subset=subset,
        split=musdb_split,
        setup_file=_corpus_setup_file(Path(data_root)),
        stems=separator.sources,
    )
    show = _show_progress(show_progress)
    track_dir = out / split
    methods = {"model": []} | ({"mixture": []} if baseline else {})
    results = []
    names = range(len(source))
    iterator = _bar(names, show, "tracks")
    for i in iterator:
        name = source.names[i]
        frames = source.num_frames(i)
        mixture = source.read_mixture(i, 0, frames)
        references = np.stack([source.read(i, stem, 0, frames) for stem in separator.sources])
        try:
            stems = separator(mixture, source.sample_rate)
        except JaxsepError as e:
            raise JaxsepError(f"{source.track(i).folder}: {e}") from None
        estimates = np.stack([stems[stem] for stem in separator.sources])
        scores = _score(name, references, estimates, source.sample_rate, bsseval)
        results.append((name, scores.framewise()))
        methods["model"].append(_track_medians(scores.framewise()))
        if baseline:
            mix = np.broadcast_to(mixture, references.shape)
            methods["mixture"].append(
                _track_medians(
                    _score(name, references, mix, source.sample_rate, bsseval).framewise()
                )
            )
    summary = {
        "model": str(model_dir),
        "data": str(data_root),
        "split": split,
        "bsseval": bsseval,
        "tracks": [name for name, _ in results],
        "median": {
            method: {
                source_name: {
                    metric: _finite_or_none(v)
                    for metric, v in zip(METRICS, _nanmedian(np.stack(per_track), 0)[:, s])
                }
                for s, source_name in enumerate(separator.sources)
            }
            for method, per_track in methods.items()
        },
    }
    track_dir.mkdir(parents=True, exist_ok=True)
    for name, framewise in results:
        _write_json(track_dir / f"{name}.json", track_json(name, separator.sources, framewise))
    _write_json(out / "summary.json", summary)
    table = summary_table(summary["median"])
    header = (
        f"# BSSEval v4 on {data_root} ({split}, {len(results)} tracks)\n\n"
        f"Median over 1 s frames per track, then median over tracks (scored by {bsseval}).\n\n"
    )
    _write_text(out / "summary.md", header + table)
    summary["table"] = table
    summary["out"] = str(out)
    return summary


def _corpus_setup_file(root: Path) -> str | None:
    """The musdb setup file a `jaxsep synth` corpus names (its stems and validation split)."""
    marker = root / "corpus.json"
    if not marker.is_file():
        return None
    try:
        return json.loads(marker.read_text()).get("setup_file") or None
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        raise JaxsepError(f"{marker}: invalid JSON") from None


def _score(
    name: str, references: np.ndarray, estimates: np.ndarray, sample_rate: int, backend: str
):
    try:
        return bss_eval(references, estimates, sample_rate, window=WINDOW_SECONDS, backend=backend)
    except JaxsepError as e:
        raise JaxsepError(f"track {name}: {e}") from None


def _show_progress(show: bool | None) -> bool:
    if show is None:
        import sys

        return sys.stderr.isatty()
    return show


def _bar(items, show: bool, unit: str):
    if not show:
        return items
    from tqdm import tqdm

    return tqdm(items, unit=unit)


def _write_text(path: Path, text: str) -> None:
    """Atomic write: a temp file next to ``path`` renamed over it."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _write_json(path: Path, data: dict) -> None:
    _write_text(path, json.dumps(data, indent=2, allow_nan=False) + "\n")

"""Chunked, batched, overlap-add inference for any trained model (DESIGN §9, style §3.4).

Why this shape: a track is cut into fixed-length segments that overlap, the segments are batched
(the tail batch padded with silence) so ONE compiled executable serves every track, each batch is
sharded over the devices of a ``("data",)`` mesh, and the segment outputs are stitched back with
a linear cross-fade normalised by the summed window. The whole track and its stems stay in host
memory; a device only ever holds the variables and one batch, so track length never bounds
device memory.

A model module (``jaxsep/models/<name>.py``) may define
``separate_waveforms(module, variables, wave [B, T, C]) -> [B, S, T, C]`` to control how its
output becomes waveforms (X-UMX: Wiener filtering); the default is
``module.apply(variables, wave, method="separate")``.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import math
import os
import string
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxsep.audio.io import check_readable, read_audio, resample_audio, write_audio
from jaxsep.audio.streams import stem_file_name
from jaxsep.compile_options import compile_for_inference
from jaxsep.errors import JaxsepError
from jaxsep.modeldir import Model, load
from jaxsep.nn.lstm import inference_layout
from jaxsep.train.mesh import batch_sharding, make_mesh, replicated

DEFAULT_SEGMENT_SECONDS = 10.0
OUTPUT_EXTENSIONS = ("wav", "flac")
DEFAULT_FILENAME = "{track}/{stem}.{ext}"

Progress = Callable[[int, int], None]
SeparateFn = Callable[[Any, Any, jax.Array], jax.Array]


def default_separate_waveforms(module: Any, variables: Any, wave: jax.Array) -> jax.Array:
    """Source waveforms ``[B, S, T, C]`` from the module's ``separate`` method."""
    return module.apply(variables, wave, method="separate")


def separate_fn_for(module: Any, model_name: str | None = None) -> SeparateFn:
    """The ``separate_waveforms`` hook of ``jaxsep.models.<model_name>`` (or, failing that, of
    the module that defines the flax class), else the default."""
    candidates = [type(module).__module__]
    if model_name and model_name.isidentifier():
        candidates.insert(0, f"jaxsep.models.{model_name}")
    for name in candidates:
        try:
            hook = getattr(importlib.import_module(name), "separate_waveforms", None)
        except ModuleNotFoundError as e:
            if e.name != name:
                raise  # the model module exists but one of its imports is missing
            continue
        if hook is not None:
            return hook
    return default_separate_waveforms


def segment_offsets(length: int, segment: int, stride: int) -> list[int]:
    """Start of every segment: every ``stride`` samples, the last one ending at ``length``.

    A track no longer than one segment is one segment at 0 (zero-padded past its end).
    """
    if length <= segment:
        return [0]
    offsets = list(range(0, length - segment, stride))
    offsets.append(length - segment)
    return offsets


def crossfade_window(segment: int) -> np.ndarray:
    """Linear (triangular) weights ``[segment]``, strictly positive so every sample is covered."""
    rise = np.arange(1, segment // 2 + 1, dtype=np.float32)
    fall = np.arange(segment - segment // 2, 0, -1, dtype=np.float32)
    window = np.concatenate([rise, fall])
    return window / window.max()


def resolve_devices(devices: str | Sequence[jax.Device] | None) -> list[jax.Device]:
    """``None``: this process's devices; ``"cpu" | "gpu" | "tpu"``: that backend's; or a list."""
    if devices is None:
        return list(jax.local_devices())
    if isinstance(devices, str):
        try:
            found = list(jax.local_devices(backend=devices))
        except RuntimeError:
            found = []
        if not found:
            raise JaxsepError(f"no {devices} devices available to JAX on this machine")
        return found
    found = list(devices)
    if not found:
        raise JaxsepError("devices: the list of devices is empty")
    return found


def _config_int(config: dict, key: str) -> int:
    value = config.get(key)
    if not isinstance(value, (int, float)) or value <= 0 or int(value) != value:
        raise JaxsepError(f"model config: '{key}' must be a positive integer, got {value!r}")
    return int(value)


class Separator:
    """Separate ``[time, channels]`` numpy audio into ``{stem: [time, channels]}`` numpy stems.

    ``segment`` (seconds) defaults to the model config's ``segment`` or 10 s; ``overlap`` is the
    fraction of a segment shared with the next; ``batch_size`` segments run per call (rounded
    up to a multiple of the device count); ``devices`` as in :func:`resolve_devices`;
    ``progress(done_segments, total_segments)`` is called after every batch.
    """

    def __init__(
        self,
        model: Model | str | os.PathLike,
        segment: float | None = None,
        overlap: float = 0.25,
        batch_size: int = 8,
        devices: str | Sequence[jax.Device] | None = None,
        progress: Progress | None = None,
    ) -> None:
        if not isinstance(model, Model):
            model = load(model)
        self.model = model
        config = model.config
        sources = config.get("sources")
        if not isinstance(sources, (list, tuple)) or not sources:
            raise JaxsepError("model config: 'sources' must be a non-empty list of stem names")
        self.sources: tuple[str, ...] = tuple(str(s) for s in sources)
        self.sample_rate = _config_int(config, "sample_rate")
        self.channels = _config_int(config, "channels")
        # a mono model whose config says "downmix": true (ChimeraNet) takes any channel count:
        # the input is averaged to mono and the stems come back mono
        self.downmix = bool(config.get("downmix", False))
        if segment is None:
            segment = config.get("segment", DEFAULT_SEGMENT_SECONDS)
        if not isinstance(segment, (int, float)) or not segment > 0:
            raise JaxsepError(f"segment must be a positive number of seconds, got {segment!r}")
        if not isinstance(overlap, (int, float)) or not 0 <= overlap < 1:
            raise JaxsepError(f"overlap must be in [0, 1), got {overlap!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise JaxsepError(f"batch size must be a positive integer, got {batch_size!r}")
        self.segment = max(1, int(round(segment * self.sample_rate)))
        self.stride = max(1, self.segment - int(round(overlap * self.segment)))
        self.devices = resolve_devices(devices)
        self.batch_size = math.ceil(batch_size / len(self.devices)) * len(self.devices)
        self.progress = progress
        self.window = crossfade_window(self.segment)
        self.trace_count = 0  # how many times the batch function was traced (one per shape)

        mesh = make_mesh(self.devices)
        self._batch_sharding = batch_sharding(mesh)
        # weights are fixed here: lay them out for inference once (recurrent weights
        # transposed; ChimeraNet inference -8%, X-UMX -4 to -6% on this CPU), not in every call
        self._variables = jax.device_put(inference_layout(model.variables), replicated(mesh))
        separate_waveforms = separate_fn_for(model.module, config.get("model"))
        if "config" in inspect.signature(separate_waveforms).parameters:
            # hooks that read their model directory's config.json (post-filter, conditioning)
            separate_waveforms = functools.partial(separate_waveforms, config=config)
        module = model.module

        def run_batch(variables, wave):
            self.trace_count += 1  # Python side effect: runs only while tracing
            return separate_waveforms(module, variables, wave)

        self._jitted = jax.jit(
            run_batch,
            in_shardings=(replicated(mesh), self._batch_sharding),
            out_shardings=self._batch_sharding,
        )
        self._executables: dict[tuple, Any] = {}  # one per input shape, with its own options

    def run_batch(self, batch: np.ndarray) -> jax.Array:
        """One device call: ``[batch_size, segment, C]`` host audio -> ``[B, S, segment, C]``,
        sharded on the mesh's ``data`` axis (the result stays on the devices)."""
        wave = jax.device_put(np.asarray(batch, np.float32), self._batch_sharding)
        key = (wave.shape, wave.dtype)
        if key not in self._executables:
            self._executables[key] = compile_for_inference(
                self._jitted, self._variables, wave, platform=self.devices[0].platform
            )
        return self._executables[key](self._variables, wave)

    def num_segments(self, length: int) -> int:
        """Segments a track of ``length`` samples (at the model's rate) is cut into."""
        return len(segment_offsets(length, self.segment, self.stride))

    def __call__(self, audio: np.ndarray, sample_rate: int) -> dict[str, np.ndarray]:
        """Stems at the caller's rate and length; mono input to a stereo model comes back stereo,
        multichannel input to a mono model with config "downmix" is averaged and comes back mono."""
        audio = self._check_input(audio, sample_rate)
        length = audio.shape[0]
        if sample_rate != self.sample_rate:
            audio = resample_audio(audio, sample_rate, self.sample_rate).astype(np.float32)
        stems = self._separate(audio)  # [S, T', C] at the model's rate
        if sample_rate != self.sample_rate:
            stems = np.stack([resample_audio(s, self.sample_rate, sample_rate) for s in stems])
            stems = _fit_length(stems, length)
        return {name: np.ascontiguousarray(s, np.float32) for name, s in zip(self.sources, stems)}

    def _check_input(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        audio = np.asarray(audio)
        if audio.ndim == 1:
            audio = audio[:, None]
        if audio.ndim != 2 or audio.shape[0] == 0:
            raise JaxsepError(f"audio must be [time, channels] with samples, got {audio.shape}")
        if not np.issubdtype(audio.dtype, np.number) or np.iscomplexobj(audio):
            raise JaxsepError(f"audio must hold real samples, got dtype {audio.dtype}")
        if not np.isfinite(audio).all():
            raise JaxsepError("audio contains NaN or infinite samples")
        if isinstance(sample_rate, (float, np.floating)) and float(sample_rate).is_integer():
            sample_rate = int(sample_rate)  # 44100.0 from a config or a musdb track
        if not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
            raise JaxsepError(f"sample rate must be a positive integer, got {sample_rate!r}")
        channels = audio.shape[1]
        if channels != self.channels:
            if channels == 1 and self.channels == 2:
                audio = np.repeat(audio, 2, axis=1)  # mono -> stereo, as demucs/umx do
            elif self.channels == 1 and self.downmix:
                audio = audio.mean(axis=1, keepdims=True)  # mono model: average the channels
            else:
                raise JaxsepError(
                    f"audio has {channels} channel(s), the model takes {self.channels} "
                    "(only mono -> stereo, or any -> mono for a model whose config sets "
                    "'downmix', is converted automatically)"
                )
        return np.asarray(audio, np.float32)

    def _separate(self, audio: np.ndarray) -> np.ndarray:
        """Overlap-add of batched segment outputs, all on the host: ``[S, T, C]``."""
        length, channels = audio.shape
        offsets = segment_offsets(length, self.segment, self.stride)
        padded = np.zeros((max(length, self.segment), channels), np.float32)
        padded[:length] = audio
        total = len(offsets)
        out = np.zeros((len(self.sources), padded.shape[0], channels), np.float32)
        weight = np.zeros((padded.shape[0], 1), np.float32)
        window = self.window[:, None]
        done = 0
        pending = None  # (device result, its offsets): dispatch batch k+1 before fetching k
        for first in range(0, total, self.batch_size):
            batch_offsets = offsets[first : first + self.batch_size]
            batch = np.zeros((self.batch_size, self.segment, channels), np.float32)
            for row, start in enumerate(batch_offsets):
                batch[row] = padded[start : start + self.segment]
            result = self.run_batch(batch)  # dispatched asynchronously
            if pending is not None:
                done = self._accumulate(*pending, out, weight, window, done, total)
            pending = (result, batch_offsets)
        done = self._accumulate(*pending, out, weight, window, done, total)
        return out[:, :length] / weight[:length]

    def _accumulate(self, result, batch_offsets, out, weight, window, done, total) -> int:
        estimates = np.asarray(result)  # [B, S, segment, C]
        expected = (self.batch_size, len(self.sources), self.segment)
        if estimates.shape[:3] != expected or estimates.shape[3] != out.shape[2]:
            raise JaxsepError(
                f"model returned shape {estimates.shape}, expected {expected + (out.shape[2],)} "
                "(config 'sources' or 'channels' do not match the model)"
            )
        for row, start in enumerate(batch_offsets):
            out[:, start : start + self.segment] += estimates[row] * window
            weight[start : start + self.segment] += window
        done += len(batch_offsets)
        if self.progress is not None:
            self.progress(done, total)
        return done


def _fit_length(stems: np.ndarray, length: int) -> np.ndarray:
    """Crop or zero-pad ``[S, T, C]`` to ``length`` samples (resampling rounds lengths)."""
    if stems.shape[1] >= length:
        return stems[:, :length]
    pad = np.zeros((stems.shape[0], length - stems.shape[1], stems.shape[2]), stems.dtype)
    return np.concatenate([stems, pad], axis=1)


def _check_template(filename: str, tracks: int) -> None:
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(filename) if name is not None}
    except ValueError as e:
        raise JaxsepError(f"--filename {filename!r}: malformed template ({e})") from None
    unknown = fields - {"track", "stem", "ext"}
    if unknown:
        raise JaxsepError(
            f"--filename {filename!r}: unknown field(s) {sorted(unknown)} "
            "(use {track}, {stem}, {ext})"
        )
    if "stem" not in fields:
        raise JaxsepError(f"--filename {filename!r}: needs {{stem}} so stems do not overwrite")
    if "track" not in fields and tracks > 1:
        raise JaxsepError(
            f"--filename {filename!r}: needs {{track}} when separating several tracks"
        )


def output_paths(
    track: str, sources: Sequence[str], out_dir: Path, filename: str, ext: str
) -> dict[str, Path]:
    """``{stem: out_dir / filename.format(track=..., stem=..., ext=...)}``."""
    return {
        stem: Path(out_dir) / filename.format(track=track, stem=stem, ext=ext) for stem in sources
    }


def track_name(path: Path) -> str:
    """The name outputs are filed under: the file name without its extension, and without the
    ``.stem`` of MUSDB18's ``NAME.stem.mp4`` (as musdb names that track)."""
    name = stem_file_name(path)
    return path.stem if name is None else name


def _preflight(paths: Sequence[Path]) -> None:
    """Fail before any work (and any write) when an input is missing or two share a name."""
    seen: dict[str, Path] = {}
    for path in paths:
        check_readable(path)
        name = track_name(path)
        if name in seen:
            raise JaxsepError(
                f"{path}: same track name '{name}' as {seen[name]} "
                "(outputs would collide; use --filename or rename)"
            )
        seen[name] = path


def separate_files(
    paths: Sequence[str | os.PathLike],
    model_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    filename: str = DEFAULT_FILENAME,
    ext: str = "wav",
    segment: float | None = None,
    overlap: float = 0.25,
    batch_size: int = 8,
    devices: str | Sequence[jax.Device] | None = None,
    show_progress: bool | None = None,
) -> list[Path]:
    """Separate audio files into ``out_dir/{filename}`` stem files; returns the written paths.

    Inputs are checked up front (nothing is written if one is missing); a file that fails to
    decode stops the run before anything is written for it. Each stem file is written
    atomically at the input's sample rate. ``show_progress=None``: a tqdm bar on a terminal.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise JaxsepError("no input tracks given")
    if ext not in OUTPUT_EXTENSIONS:
        raise JaxsepError(f"--ext {ext!r}: use one of {', '.join(OUTPUT_EXTENSIONS)}")
    _check_template(filename, len(paths))
    _preflight(paths)
    separator = Separator(
        load(model_dir), segment=segment, overlap=overlap, batch_size=batch_size, devices=devices
    )
    if show_progress is None:
        show_progress = sys.stderr.isatty()
    written: list[Path] = []
    for path in paths:
        audio, sample_rate = read_audio(path)
        try:
            stems = _separate_with_bar(
                separator, audio, sample_rate, track_name(path), show_progress
            )
        except JaxsepError as e:
            raise JaxsepError(f"{path}: {e}") from None
        targets = output_paths(track_name(path), separator.sources, Path(out_dir), filename, ext)
        for stem, target in targets.items():
            target.parent.mkdir(parents=True, exist_ok=True)
            written.append(write_audio(target, stems[stem], sample_rate))
    return written


def _separate_with_bar(
    separator: Separator, audio: np.ndarray, sample_rate: int, name: str, show: bool
) -> dict[str, np.ndarray]:
    if not show:
        return separator(audio, sample_rate)
    from tqdm import tqdm

    with tqdm(desc=name, unit="seg", leave=False) as bar:

        def update(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        separator.progress = update
        try:
            return separator(audio, sample_rate)
        finally:
            separator.progress = None

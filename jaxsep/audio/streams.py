"""Windows of one audio stream of a multi-stream file (MUSDB18's ``.stem.mp4``), via ffmpeg.

musdb reads these files through stempeg, which runs ffprobe before every read and seeks on the
output side of ffmpeg (it decodes everything before the window and throws it away), so a
window's cost grows with its offset. Training reads many short windows at random offsets, so
this module probes each file once and seeks on the input side, with a short pre-roll
(`tools/bench_stem_reads.py` measures both). Where the encoder used noise substitution the
decoded noise differs from a decode that started earlier, as a fresh decoder's would.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jaxsep.errors import JaxsepError

STEM_FILE_SUFFIX = ".stem.mp4"  # MUSDB18 and Native Instruments Stems
_FFMPEG_TIMEOUT_S = 600
# Decoding starts this many frames before a window and drops them: a decoder started cold at the
# window gets its first AAC frame or two (1024 samples each) wrong, without the previous frame's
# overlap (off by up to 0.26 on chirps of amplitude 0.2). From 1024 frames of pre-roll on, a
# window equals a decode from the file's start sample for sample (tests/test_stem_mp4.py).
_PREROLL_FRAMES = 2048


def stem_file_name(path: Path) -> str | None:
    """``NAME`` of a multi-stream ``NAME.stem.mp4`` (how musdb names the track), else None."""
    name = Path(path).name
    if not name.lower().endswith(STEM_FILE_SUFFIX):
        return None
    return name[: -len(STEM_FILE_SUFFIX)]


@dataclass(frozen=True)
class StreamRef:
    """Audio stream ``index`` (counting audio streams only) of ``path``, with what ffprobe said
    of it: the same three fields `soundfile.info` gives for a file."""

    path: Path
    index: int
    samplerate: int
    channels: int
    frames: int

    def __str__(self) -> str:
        return f"{self.path} [audio stream {self.index}]"


def probe_streams(path: Path) -> list[StreamRef]:
    """Every audio stream of ``path``, in order, or a one-line error naming the file."""
    path = Path(path)
    if not path.is_file():
        raise JaxsepError(f"{path}: no such file")
    command = [
        "ffprobe", "-v", "error", "-select_streams", "a",
        "-show_entries", "stream=sample_rate,channels,duration_ts,time_base,duration",
        "-of", "json", str(path),
    ]  # fmt: skip
    result = _run(command, path)
    try:
        streams = json.loads(result.stdout).get("streams") or []
        refs = [_stream_ref(path, i, s) for i, s in enumerate(streams)]
    except (ValueError, KeyError, TypeError, ZeroDivisionError):
        raise JaxsepError(f"{path}: ffprobe reports no usable audio streams") from None
    if not refs:
        raise JaxsepError(f"{path}: no audio streams")
    return refs


def _stream_ref(path: Path, index: int, stream: dict) -> StreamRef:
    rate = int(stream["sample_rate"])
    num, den = (int(x) for x in stream.get("time_base", "0/1").split("/"))
    if "duration_ts" in stream and num * rate == den:  # time base 1/rate: duration_ts counts frames
        frames = int(stream["duration_ts"])
    else:
        frames = int(round(float(stream["duration"]) * rate))
    return StreamRef(path, index, rate, int(stream["channels"]), frames)


def read_stream_window(ref: StreamRef, start: int, frames: int) -> np.ndarray:
    """``frames`` frames of the stream from frame ``start`` as float32 ``[frames, C]``, zero-padded
    past its end (as `jaxsep.data.tracks.read_window` pads files)."""
    return read_streams_window([ref], start, frames)[0]


def read_streams_window(refs: Sequence[StreamRef], start: int, frames: int) -> np.ndarray:
    """The same window of several streams of one file, ``[N, frames, C]``, in one ffmpeg call:
    starting ffmpeg costs more than decoding a few seconds (1 s of 4 stems: 4 calls 309 ms, one
    call merging the streams with ``amerge`` 90 ms, the same samples)."""
    first = refs[0]
    if any((r.path, r.samplerate, r.channels) != (first.path, first.samplerate, first.channels)
           for r in refs):  # fmt: skip
        raise ValueError("read_streams_window: streams of one file, one rate and channel count")
    rate, channels = first.samplerate, first.channels * len(refs)
    seek = max(0, start - _PREROLL_FRAMES)
    command = ["ffmpeg", "-nostdin", "-v", "error"]
    if seek > 0:
        command += ["-ss", f"{seek / rate:.6f}"]  # 1 us: finer than one frame
    command += ["-i", str(first.path)]
    if len(refs) == 1:
        command += ["-map", f"0:a:{first.index}"]
    else:  # overlapping (all stereo) layouts: amerge concatenates channels in input order
        inputs = "".join(f"[0:a:{r.index}]" for r in refs)
        command += ["-filter_complex", f"{inputs}amerge=inputs={len(refs)}[merged]"]
        command += ["-map", "[merged]"]
    command += [
        "-t", f"{(start - seek + frames + 1) / rate:.6f}",
        "-f", "f32le", "-acodec", "pcm_f32le", "-ac", str(channels), "-ar", str(rate), "pipe:1",
    ]  # fmt: skip
    pcm = _run(command, first.path).stdout
    data = np.frombuffer(pcm, "<f4")
    data = data[: data.size - data.size % channels].reshape(-1, channels)
    data = data[start - seek : start - seek + frames]
    if data.shape[0] < frames:
        data = np.concatenate([data, np.zeros((frames - data.shape[0], channels), "<f4")])
    # [frames, N * C] -> [N, frames, C]
    return np.ascontiguousarray(data.reshape(frames, len(refs), first.channels).transpose(1, 0, 2))


def _run(command: list[str], path: Path) -> subprocess.CompletedProcess:
    try:
        result = subprocess.run(command, capture_output=True, timeout=_FFMPEG_TIMEOUT_S)
    except FileNotFoundError:
        raise JaxsepError(f"{path}: {command[0]} not found (install ffmpeg to read it)") from None
    except subprocess.TimeoutExpired:
        raise JaxsepError(f"{path}: {command[0]} took over {_FFMPEG_TIMEOUT_S} s") from None
    if result.returncode != 0:
        reason = " ".join(result.stderr.decode(errors="replace").split())[-300:]
        raise JaxsepError(f"{path}: cannot decode audio ({reason or command[0] + ' failed'})")
    return result

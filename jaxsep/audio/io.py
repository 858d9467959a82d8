"""Read, write and resample audio files on the host, with one-line errors that name the file.

Audio is float ``[time, channels]`` numpy. Decoding uses soundfile (libsndfile: wav, flac, ogg,
mp3, ...); other containers (m4a, ...) fall back to audioread/ffmpeg, and a MUSDB18
``.stem.mp4`` reads as its mixture stream (`jaxsep.audio.streams`). Resampling uses soxr at
very high quality. Writes are atomic: a temporary file in the same folder is renamed over the
target, so an interrupted run never leaves a truncated file behind.
"""

from __future__ import annotations

import os
import re
import tempfile
import warnings
from pathlib import Path

import numpy as np
import soundfile
import soxr

from jaxsep.audio.streams import probe_streams, read_stream_window, stem_file_name
from jaxsep.errors import JaxsepError

_WRITE_FORMATS = {".wav": ("WAV", "FLOAT"), ".flac": ("FLAC", "PCM_24")}
_MAX_CHANNELS = 64


def _channel_name(count: int) -> str:
    return {1: "mono", 2: "stereo"}.get(count, f"{count}-channel")


def _soundfile_extensions() -> set[str]:
    return {"." + name.lower() for name in soundfile.available_formats()}


def _decode_with_audioread(path: Path) -> tuple[np.ndarray, int]:
    """Fallback for containers libsndfile does not know (m4a, aac, ...), via ffmpeg."""
    with warnings.catch_warnings():  # audioread imports stdlib modules deprecated in 3.11+
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioread

        with audioread.audio_open(str(path)) as source:
            sample_rate, channels = source.samplerate, source.channels
            pcm = b"".join(bytes(block) for block in source)
    audio = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
    return audio.reshape(-1, channels), int(sample_rate)


def _decode(path: Path) -> tuple[np.ndarray, int]:
    if stem_file_name(path) is not None:
        # MUSDB18's multi-stream file: its first audio stream is the mixture (float decode; the
        # audioread fallback below would pick a stream itself and quantise to 16 bits)
        mixture = probe_streams(path)[0]
        return read_stream_window(mixture, 0, mixture.frames), mixture.samplerate
    try:
        audio, sample_rate = soundfile.read(str(path), dtype="float32", always_2d=True)
        return audio, int(sample_rate)
    except (soundfile.LibsndfileError, RuntimeError) as error:
        if path.suffix.lower() in _soundfile_extensions():
            raise JaxsepError(f"{path}: cannot decode audio ({_one_line(error)})") from None
    try:
        return _decode_with_audioread(path)
    except Exception as error:  # audioread raises many unrelated types
        reason = _one_line(error) or "neither libsndfile nor ffmpeg can read this format"
        raise JaxsepError(f"{path}: cannot decode audio ({reason})") from None


def _one_line(error: Exception) -> str:
    """The library's reason without its own "Error opening '<path>':" prefix or line breaks."""
    reason = re.sub(r"^Error opening .*?: ", "", str(error))
    return " ".join(reason.split())


def check_readable(path: Path) -> None:
    """Fail in one line when ``path`` is missing, a folder or empty: before any decoding."""
    if not path.exists():
        raise JaxsepError(f"{path}: no such file")
    if not path.is_file():
        raise JaxsepError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise JaxsepError(f"{path}: file is empty (0 bytes)")


def read_audio(
    path: str | os.PathLike,
    *,
    sample_rate: int | None = None,
    channels: int | None = None,
    resample: bool = False,
    dtype: np.dtype | type = np.float32,
) -> tuple[np.ndarray, int]:
    """Load ``path`` as ``(audio [time, channels], sample_rate)``.

    ``sample_rate``: the rate the caller needs; a file at another rate is an error unless
    ``resample`` is true, then it is converted with :func:`resample`. ``channels``: the
    channel count the caller needs; any other count is an error (no silent up/down-mixing).
    """
    path = Path(path)
    check_readable(path)
    audio, file_rate = _decode(path)
    if audio.shape[0] == 0:
        raise JaxsepError(f"{path}: file contains no audio samples")
    if not np.isfinite(audio).all():
        raise JaxsepError(f"{path}: file contains NaN or infinite samples")
    if channels is not None and audio.shape[1] != channels:
        raise JaxsepError(
            f"{path}: audio is {_channel_name(audio.shape[1])}, expected {_channel_name(channels)}"
        )
    if sample_rate is not None and file_rate != sample_rate:
        if not resample:
            raise JaxsepError(
                f"{path}: sample rate is {file_rate} Hz, expected {sample_rate} Hz "
                "(enable resampling or convert the file)"
            )
        audio, file_rate = resample_audio(audio, file_rate, sample_rate), sample_rate
    return np.ascontiguousarray(audio, dtype=dtype), file_rate


def resample_audio(audio: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample ``[time, channels]`` (or ``[time]``) from ``sr_in`` to ``sr_out`` Hz with soxr VHQ.

    The output has ``round(time * sr_out / sr_in)`` samples and the input's float dtype.
    """
    if sr_in <= 0 or sr_out <= 0:
        raise ValueError(f"sample rates must be positive, got {sr_in} -> {sr_out}")
    if sr_in == sr_out:
        return audio
    audio = np.asarray(audio)
    if not np.issubdtype(audio.dtype, np.floating):
        audio = audio.astype(np.float32)
    return soxr.resample(audio, sr_in, sr_out, quality="VHQ")


resample = resample_audio


def write_audio(
    path: str | os.PathLike,
    audio: np.ndarray,
    sample_rate: int,
    *,
    subtype: str | None = None,
) -> Path:
    """Write ``audio [time, channels]`` to a .wav or .flac file atomically; returns the path.

    Default subtypes: 32-bit float for wav (lossless, no clipping), 24-bit PCM for flac. PCM
    subtypes clip samples outside [-1, 1], as every PCM writer does.
    """
    path = Path(path)
    audio = np.asarray(audio)
    suffix = path.suffix.lower()
    if suffix not in _WRITE_FORMATS:
        raise JaxsepError(f"{path}: cannot write '{suffix or 'no extension'}', use .wav or .flac")
    if audio.ndim != 2 or not 1 <= audio.shape[1] <= _MAX_CHANNELS or audio.shape[0] == 0:
        raise JaxsepError(
            f"{path}: audio must be [time, channels] with 1..{_MAX_CHANNELS} channels and at "
            f"least one sample, got shape {audio.shape}"
        )
    if not np.issubdtype(audio.dtype, np.number) or not np.isfinite(audio).all():
        raise JaxsepError(f"{path}: refusing to write audio with NaN or infinite samples")
    if not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise JaxsepError(f"{path}: sample rate must be a positive integer, got {sample_rate!r}")
    if not path.parent.is_dir():
        raise JaxsepError(f"{path}: folder {path.parent} does not exist")
    file_format, default_subtype = _WRITE_FORMATS[suffix]
    subtype = subtype or default_subtype
    if not soundfile.check_format(file_format, subtype):
        raise JaxsepError(f"{path}: subtype {subtype!r} is not valid for {file_format}")

    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        soundfile.write(temp_name, audio, int(sample_rate), subtype=subtype, format=file_format)
        os.replace(temp_name, path)
    except (soundfile.LibsndfileError, RuntimeError, OSError) as error:
        raise JaxsepError(f"{path}: cannot write audio ({_one_line(error)})") from None
    finally:
        if os.path.exists(temp_name):
            os.remove(temp_name)
    return path

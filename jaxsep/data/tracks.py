"""Random-access multi-stem track sources.

A source lists tracks, each a folder of stem files, and reads any window of any stem without
decoding the whole file (soundfile seeks), so excerpt sampling stays cheap inside grain workers.
Output stems may be *groups* of file stems summed on read (e.g. ``accompaniment`` = drums + bass +
other), which is how every recipe asks for its targets.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from jaxsep.audio.streams import (
    STEM_FILE_SUFFIX,
    StreamRef,
    probe_streams,
    read_stream_window,
    read_streams_window,
    stem_file_name,
)
from jaxsep.errors import JaxsepError, is_count

MUSDB_STEMS = ("drums", "bass", "other", "vocals")
# Longest window of a multi-stream file decoded for all its stems at once and kept for the
# next stem's read: an excerpt, not a whole track (4 stems x 4 min would hold 340 MB).
_SHARED_DECODE_MAX_SECONDS = 30
AUDIO_EXTENSIONS = ("wav", "flac", "ogg")


@dataclass(frozen=True)
class Track:
    """One song: its stem files by file-stem name and an optional premixed file. A stem (or the
    mixture) may be one stream of a multi-stream file (`StreamRef`, MUSDB18's ``.stem.mp4``);
    ``folder`` is then that file."""

    name: str
    folder: Path
    files: Mapping[str, Path | StreamRef]
    mixture: Path | StreamRef | None


def read_window(path: Path | StreamRef, start: int, frames: int) -> np.ndarray:
    """Read ``frames`` frames from ``start`` as float32 ``[frames, C]``, zero-padded past the end."""
    if isinstance(path, StreamRef):
        return read_stream_window(path, start, frames)
    try:
        with sf.SoundFile(str(path)) as f:
            channels = f.channels
            if start < f.frames:
                f.seek(start)
                data = f.read(frames, dtype="float32", always_2d=True)
            else:
                data = np.zeros((0, channels), np.float32)
    except (sf.LibsndfileError, RuntimeError) as err:
        raise JaxsepError(f"{path}: cannot read audio ({err})") from None
    if data.shape[0] < frames:
        data = np.concatenate([data, np.zeros((frames - data.shape[0], channels), np.float32)])
    return data


class TrackSource:
    """Base class: tracks of stem files, with output stems that are sums of file stems.

    Subclasses find the tracks and call ``__init__`` with them; this class checks that every
    track has every needed file and that all files share one sample rate and channel count.
    """

    def __init__(
        self,
        tracks: Sequence[Track],
        groups: Mapping[str, Sequence[str]],
        *,
        optional: Iterable[str] = (),
        where: str = "",
    ) -> None:
        if not tracks:
            raise JaxsepError(f"{where}: no tracks found")
        self._tracks = list(tracks)
        self._groups = {stem: tuple(parts) for stem, parts in groups.items()}
        self._optional = frozenset(optional)
        self.stems: tuple[str, ...] = tuple(self._groups)
        self.names: tuple[str, ...] = tuple(t.name for t in self._tracks)
        self.sample_rate, self.channels, self._frames = self._check_tracks()
        # per reading thread (grain reads batches in `read_threads` threads): the last window
        # of a multi-stream file decoded for all its stems, (key, {part: window})
        self._stream_windows: dict[int, tuple[tuple[int, int, int], dict[str, np.ndarray]]] = {}

    def _check_tracks(self) -> tuple[int, int, list[int]]:
        needed = {part for parts in self._groups.values() for part in parts}
        rate = channels = None
        reference = None
        lengths = []
        for track in self._tracks:
            for part in sorted(needed):
                if part not in track.files and part not in self._optional:
                    raise JaxsepError(f"{track.folder}: missing stem '{part}'")
            stem_paths = [track.files[p] for p in sorted(needed) if p in track.files]
            extra = [track.mixture] if track.mixture is not None else []
            frames = []
            for path in stem_paths + extra:
                info = _info(path)
                if rate is None:
                    rate, channels, reference = info.samplerate, info.channels, path
                if info.samplerate != rate:
                    raise JaxsepError(
                        f"{path}: sample rate {info.samplerate} Hz differs from {rate} Hz "
                        f"of {reference}"
                    )
                if info.channels != channels:
                    raise JaxsepError(
                        f"{path}: {info.channels} channels differs from {channels} of {reference}"
                    )
                frames.append(info.frames)
            lengths.append(min(frames[: len(stem_paths)], default=0))
        return int(rate), int(channels), lengths

    def __len__(self) -> int:
        return len(self._tracks)

    def track(self, i: int) -> Track:
        return self._tracks[i]

    def num_frames(self, i: int) -> int:
        """Frames of track ``i`` (the shortest of its stem files, so every stem covers it)."""
        return self._frames[i]

    def read(self, i: int, stem: str, start: int, frames: int) -> np.ndarray:
        """One output stem of track ``i``: float32 ``[frames, C]`` (the sum of its file stems)."""
        if stem not in self._groups:
            raise JaxsepError(
                f"{self._tracks[i].folder}: unknown stem '{stem}' (have {self.stems})"
            )
        track = self._tracks[i]
        out = np.zeros((frames, self.channels), np.float32)
        for part in self._groups[stem]:
            if part in track.files:
                out += self._read_part(i, part, start, frames)
        return out

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__ | {"_stream_windows": {}}  # grain workers get no stale windows

    def _read_part(self, i: int, part: str, start: int, frames: int) -> np.ndarray:
        """One file stem's window. Streams of one ``.stem.mp4`` are decoded together, once per
        window (an excerpt reads every stem at one offset), and kept for the next stem's read;
        windows over `_SHARED_DECODE_MAX_SECONDS` (whole tracks, for evaluation) are not kept.
        One slot per thread: threads reading different excerpts would evict each other's."""
        track = self._tracks[i]
        ref = track.files[part]
        if not isinstance(ref, StreamRef) or frames > _SHARED_DECODE_MAX_SECONDS * ref.samplerate:
            return read_window(ref, start, frames)
        key, thread = (i, start, frames), threading.get_ident()
        cached = self._stream_windows.get(thread)
        if cached is None or cached[0] != key:
            parts = [p for p, r in track.files.items() if isinstance(r, StreamRef)]
            windows = read_streams_window([track.files[p] for p in parts], start, frames)
            cached = (key, dict(zip(parts, windows, strict=True)))
            self._stream_windows[thread] = cached
        return cached[1][part]

    def read_mixture(self, i: int, start: int, frames: int) -> np.ndarray:
        """The premixed file when the track has one, else the sum of all output stems."""
        track = self._tracks[i]
        if track.mixture is not None:
            return read_window(track.mixture, start, frames)
        return sum(self.read(i, stem, start, frames) for stem in self.stems)


def _info(path: Path | StreamRef) -> sf._SoundFileInfo | StreamRef:
    if isinstance(path, StreamRef):
        return path  # probed when the track was found; it has the same three fields
    try:
        return sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as err:
        raise JaxsepError(f"{path}: cannot read audio header ({err})") from None


def _resolve_groups(
    stems: Sequence[str] | None,
    grouping: Mapping[str, Sequence[str]] | None,
    available: Sequence[str],
) -> dict[str, tuple[str, ...]]:
    """Output stem -> file stems. Default: the grouping's keys, else every available file stem."""
    grouping = dict(grouping or {})
    if stems is None:
        stems = list(grouping) if grouping else list(available)
    return {stem: tuple(grouping.get(stem, (stem,))) for stem in stems}


class StemFolderSource(TrackSource):
    """Folders of stems (MUSDB-HQ, Bach10, Dagstuhl style): one folder per song, one file per stem.

    Any folder under ``root`` that directly holds audio files is a track; a file's stem name is
    its base name (a ``<folder name>-`` prefix, as in Bach10, is dropped). A file named
    ``mixture`` (or exactly like its folder) is the premixed track, never a stem. Any
    ``NAME.stem.mp4`` under ``root`` (MUSDB18, Native Instruments Stems) is a track too, its
    streams named as musdb's default setup names them (`MUSDB18_STEM_IDS`).
    """

    def __init__(
        self,
        root: str | Path,
        stems: Sequence[str] | None = None,
        grouping: Mapping[str, Sequence[str]] | None = None,
        ext: Sequence[str] = AUDIO_EXTENSIONS,
        *,
        optional: Iterable[str] = (),
    ) -> None:
        root = Path(root)
        if not root.is_dir():
            raise JaxsepError(f"{root}: not a folder")
        tracks = [_folder_track(folder, root, ext) for folder in _track_folders(root, ext)]
        tracks += [_stem_file_track(path, root) for path in root.rglob(f"*{STEM_FILE_SUFFIX}")]
        if not tracks:
            raise JaxsepError(f"{root}: no folders of {'/'.join(ext)} stem files, no .stem.mp4")
        tracks.sort(key=lambda track: track.folder)  # folders in the order they always had
        available = sorted(tracks[0].files)
        groups = _resolve_groups(stems, grouping, available)
        super().__init__(tracks, groups, optional=optional, where=str(root))


# musdb's default setup (configs/mus.yaml): the stream order of MUSDB18 and of NI Stems files
MUSDB18_STEM_IDS = {"mixture": 0, "drums": 1, "bass": 2, "other": 3, "vocals": 4}


def _stem_file_track(path: Path, root: Path) -> Track:
    """A ``.stem.mp4`` in a folder source: stream 0 the mixture, then the stems in musdb's order
    (a file with fewer streams lacks the last stems, which `TrackSource` reports by name)."""
    streams = probe_streams(path)
    files = {stem: streams[k] for stem, k in MUSDB18_STEM_IDS.items() if 0 < k < len(streams)}
    name = (path.parent.relative_to(root) / stem_file_name(path)).as_posix()
    return Track(name, path, files, streams[MUSDB18_STEM_IDS["mixture"]])


def _track_folders(root: Path, ext: Sequence[str]) -> list[Path]:
    suffixes = {"." + e.lower().lstrip(".") for e in ext}
    folders = {p.parent for p in root.rglob("*") if p.is_file() and p.suffix.lower() in suffixes}
    return sorted(folders)


def _folder_track(folder: Path, root: Path, ext: Sequence[str]) -> Track:
    suffixes = {"." + e.lower().lstrip(".") for e in ext}
    files: dict[str, Path] = {}
    mixture = None
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.suffix.lower() not in suffixes:
            continue
        stem = path.stem
        if stem in ("mixture", folder.name):
            mixture = path
            continue
        if stem.startswith(folder.name + "-"):
            stem = stem[len(folder.name) + 1 :]
        if stem in files:
            raise JaxsepError(
                f"{folder}: two files for stem '{stem}' ({files[stem].name}, {path.name})"
            )
        files[stem] = path
    name = folder.relative_to(root).as_posix() if folder != root else folder.name
    return Track(name, folder, files, mixture)


class FretsOnFireSource(StemFolderSource):
    """Frets-on-Fire songs: ``guitar.ogg`` (lead guitar) + ``song.ogg`` and optional ``rhythm.ogg``.

    The stems are ``("guitar", "backing")``; the backing is the song plus the rhythm part.
    """

    def __init__(self, root: str | Path) -> None:
        super().__init__(
            root,
            grouping={"guitar": ["guitar"], "backing": ["song", "rhythm"]},
            ext=("ogg",),
            optional=("rhythm",),
        )


class MusdbSource(TrackSource):
    """A MUSDB-layout dataset: MUSDB18-HQ (a folder of WAV stems per track) or MUSDB18 (one
    ``.stem.mp4`` per track, its streams the mixture and the stems), read with a musdb setup
    file's meaning (source files, ``stem_ids``, targets, validation tracks). Audio comes from
    soundfile, or for ``.stem.mp4`` from `jaxsep.audio.streams`, not through musdb: its
    ``musdb.DB`` runs ffprobe five times per track before the first read (3.2 s for 40 tracks
    on this machine; 0.04 s here) and decodes through ffmpeg, 16-bit quantised.

    ``stems`` may name musdb *targets* of the setup file as well as sources, e.g.
    ``accompaniment`` reads as drums + bass + other. ``is_wav``: the layout; ``None`` tells
    it from the subset folder (track folders: HQ; ``.stem.mp4`` files and no folders: MUSDB18).
    """

    def __init__(
        self,
        root: str | Path,
        subset: str = "train",
        split: str | None = None,
        setup_file: str | None = None,
        stems: Sequence[str] = MUSDB_STEMS,
        is_wav: bool | None = None,
    ) -> None:
        root = Path(root)
        if not (root / subset).is_dir():
            raise JaxsepError(f"{root / subset}: no such MUSDB subset folder")
        if is_wav is None:
            is_wav = _is_wav_layout(root / subset)
        setup = _musdb_setup(root, subset, split, setup_file)
        targets = setup.get("targets") or {}
        groups = {}
        for stem in stems:
            if stem in setup["sources"]:
                groups[stem] = (stem,)
            elif stem in targets:
                groups[stem] = tuple(targets[stem])
            else:
                raise JaxsepError(f"{root}: stem '{stem}' is neither a musdb source nor a target")
        needed = sorted({part for parts in groups.values() for part in parts})
        unknown = [part for part in needed if part not in setup["sources"]]
        if unknown:
            raise JaxsepError(
                f"{root}: the setup file's targets name {', '.join(unknown)}, not a source"
            )
        find = _wav_track if is_wav else _stem_mp4_track
        entries = _musdb_entries(root / subset, is_wav)
        validation = set(setup.get("validation_tracks") or ())
        if split is not None:
            entries = [e for e in entries if (e[0] in validation) == (split == "valid")]
        tracks = [find(name, path, setup, needed) for name, path in entries]
        super().__init__(tracks, groups, where=f"{root / subset} (split={split})")


def _is_wav_layout(subset_dir: Path) -> bool:
    """Track folders: HQ; else ``.stem.mp4`` files: MUSDB18; neither: HQ (no tracks found)."""
    return bool(_musdb_entries(subset_dir, True)) or not _musdb_entries(subset_dir, False)


def _musdb_entries(subset_dir: Path, is_wav: bool) -> list[tuple[str, Path]]:
    """(track name, track path) as musdb lists them: every folder (HQ) or ``.stem.mp4`` file,
    sorted by name (hidden folders, such as ``.ipynb_checkpoints``, are not tracks)."""
    if is_wav:
        folders = (p for p in subset_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
        return [(p.name, p) for p in sorted(folders)]
    return [(stem_file_name(p), p) for p in sorted(subset_dir.glob(f"*{STEM_FILE_SUFFIX}"))]


def _wav_track(name: str, folder: Path, setup: Mapping[str, Any], needed: Sequence[str]) -> Track:
    """MUSDB18-HQ: the track's folder holds one WAV per source (named by the setup file)."""
    files = {}
    for part in needed:
        path = folder / setup["sources"][part]
        if not path.is_file():
            raise JaxsepError(f"{folder}: missing stem '{part}' ({path.name})")
        files[part] = path
    mixture = folder / setup["mixture"]
    return Track(name, folder, files, mixture if mixture.is_file() else None)


def _stem_mp4_track(
    name: str, path: Path, setup: Mapping[str, Any], needed: Sequence[str]
) -> Track:
    """MUSDB18: one ``.stem.mp4`` per track; the setup's ``stem_ids`` number its audio streams."""
    streams = probe_streams(path)

    def stream(part: str) -> StreamRef:
        index = setup["stem_ids"][part]
        if not is_count(index, 0) or index >= len(streams):
            raise JaxsepError(
                f"{path}: no audio stream {index!r} for '{part}' (the file has {len(streams)})"
            )
        return streams[index]

    return Track(name, path, {part: stream(part) for part in needed}, stream("mixture"))


SETUP_MAPPINGS = ("sources", "targets", "stem_ids")


def _musdb_setup(
    root: Path, subset: str, split: str | None, setup_file: str | None
) -> dict[str, Any]:
    """The checked setup file (``root / setup_file``, else musdb's own ``mus.yaml``), after
    checking that `split` applies to `subset`."""
    if split is not None and split not in ("train", "valid"):
        raise JaxsepError(f"{root / subset}: split must be 'train' or 'valid', got {split!r}")
    if split is not None and subset != "train":
        raise JaxsepError(f"{root / subset}: split={split!r} applies to the train subset only")
    if setup_file is None:
        setup_path = _musdb_default_setup()
    else:
        setup_path = root / setup_file
        if not setup_path.is_file():
            raise JaxsepError(f"{setup_path}: musdb setup file not found")
    return read_musdb_setup(setup_path)


def _musdb_default_setup() -> Path:
    """musdb's ``configs/mus.yaml``, found without importing musdb (its import runs ffmpeg)."""
    import importlib.util

    spec = importlib.util.find_spec("musdb")
    if spec is None or not spec.submodule_search_locations:
        raise JaxsepError("musdb is not installed: pass a musdb setup file (data.setup_file)")
    return Path(list(spec.submodule_search_locations)[0]) / "configs" / "mus.yaml"


def read_musdb_setup(path: Path) -> dict[str, Any]:
    """A musdb setup YAML, checked for what musdb and `MusdbSource` read from it."""
    import yaml

    try:
        setup = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError) as err:
        raise JaxsepError(f"{path}: cannot read musdb setup file ({err})") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f" (line {mark.line + 1}: {err.problem})" if mark is not None else ""
        raise JaxsepError(f"{path}: musdb setup file is not valid YAML{line}") from None
    if not isinstance(setup, dict):
        raise JaxsepError(f"{path}: musdb setup file must be a mapping of settings")
    for key in (*SETUP_MAPPINGS, "mixture"):
        if key not in setup:
            raise JaxsepError(f"{path}: musdb setup file has no '{key}'")
    for key in SETUP_MAPPINGS:
        if not isinstance(setup[key], dict):
            raise JaxsepError(f"{path}: musdb setup '{key}' must be a mapping")
    missing = [s for s in ("mixture", *setup["sources"]) if s not in setup["stem_ids"]]
    if missing:
        raise JaxsepError(f"{path}: musdb setup 'stem_ids' lacks {', '.join(missing)}")
    validation = setup.get("validation_tracks")
    if validation is not None and not (
        isinstance(validation, list) and all(isinstance(v, str) for v in validation)
    ):
        raise JaxsepError(f"{path}: musdb setup 'validation_tracks' must be a list of names")
    return setup


def seconds_to_frames(seconds: float, sample_rate: int) -> int:
    return int(math.ceil(seconds * sample_rate))


def musdb_source_from_config(data: Any, subset: str, split: str | None = None) -> MusdbSource:
    """The MUSDB-layout source a recipe's `config.data` names (`root`, `setup_file`, `stems`)."""
    if not data.root:
        raise JaxsepError(
            "config.data.root is empty: pass --data ROOT (a MUSDB18-HQ-layout folder)"
        )
    return MusdbSource(
        data.root,
        subset=subset,
        split=split,
        setup_file=data.setup_file or None,
        stems=tuple(data.stems),
    )


def validation_source_from_config(data: Any) -> MusdbSource:
    """The setup file's validation split, or the test subset when it lists none (tiny corpora)."""
    if data.setup_file:
        try:
            source = musdb_source_from_config(data, "train", "valid")
            if len(source):
                return source
        except JaxsepError:
            pass  # no validation tracks listed: fall back to the test subset
    return musdb_source_from_config(data, "test")

"""Excerpt sampling: coherent / incoherent mixing, silence rejection, mixture = sum of sources."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from jaxsep.data.augment import Augmentation
from jaxsep.data.mixing import ExcerptSampler, level_db
from jaxsep.data.tracks import StemFolderSource
from jaxsep.errors import JaxsepError

SR = 44100
STEMS = ("drums", "bass", "other", "vocals")
FRAMES = SR * 2
STEP = 1e-5  # ramp step: channel 0 of every file is frame_index * STEP


def write_coded_song(folder: Path, track: int, frames: int = FRAMES) -> None:
    """Each stem file says which track and stem it is (ch1) and which frame (ch0)."""
    folder.mkdir(parents=True)
    for s, name in enumerate(STEMS):
        code = 0.1 * (track + 1) + 0.01 * (s + 1)
        audio = np.stack([np.arange(frames) * STEP, np.full(frames, code)], axis=1)
        sf.write(folder / f"{name}.wav", audio.astype(np.float32), SR, subtype="FLOAT")


def decode(source_audio: np.ndarray, stem: int) -> tuple[int, int]:
    """(track, start frame) of an un-augmented excerpt of stem ``stem``."""
    track = round((float(source_audio[0, 1]) - 0.01 * (stem + 1)) / 0.1) - 1
    start = round(float(source_audio[0, 0]) / STEP)
    return track, start


@pytest.fixture(scope="module")
def coded_source(tmp_path_factory) -> StemFolderSource:
    root = tmp_path_factory.mktemp("coded")
    for k in range(4):
        write_coded_song(root / f"song{k}", k)
    return StemFolderSource(root, stems=STEMS)


def test_coherent_excerpt_is_one_track_and_offset(coded_source):
    sampler = ExcerptSampler(coded_source, frames=1000, coherent=True)
    rng = np.random.default_rng(0)
    seen_tracks = set()
    for _ in range(8):
        example = sampler.sample(rng)
        sources, mixture = example["sources"], example["mixture"]
        assert sources.shape == (4, 1000, 2) and mixture.shape == (1000, 2)
        assert sources.dtype == np.float32 and mixture.dtype == np.float32
        np.testing.assert_allclose(mixture, sources.sum(axis=0), rtol=1e-6)
        picks = {decode(sources[s], s) for s in range(4)}
        assert len(picks) == 1
        track, start = picks.pop()
        seen_tracks.add(track)
        np.testing.assert_allclose(sources[2, :, 0], (start + np.arange(1000)) * STEP, rtol=1e-5)
    assert len(seen_tracks) > 1


def test_incoherent_excerpt_draws_stems_from_different_tracks(coded_source):
    sampler = ExcerptSampler(coded_source, frames=1000, coherent=False)
    rng = np.random.default_rng(1)
    mixed_tracks = 0
    for _ in range(8):
        sources = sampler.sample(rng)["sources"]
        tracks = {decode(sources[s], s)[0] for s in range(4)}
        mixed_tracks += len(tracks) > 1
    assert mixed_tracks >= 4


def test_target_stems_select_and_order_sources_but_mixture_sums_all(coded_source):
    sampler = ExcerptSampler(coded_source, frames=500, stems=("vocals", "drums"))
    example = sampler.sample(np.random.default_rng(2))
    assert example["sources"].shape == (2, 500, 2)
    track, start = decode(example["sources"][0], 3)
    full = [coded_source.read(track, stem, start, 500) for stem in STEMS]
    np.testing.assert_allclose(example["sources"][1], full[0])
    np.testing.assert_allclose(example["mixture"], sum(full), rtol=1e-6)


def test_silent_excerpts_are_redrawn(tmp_path):
    folder = tmp_path / "half_silent"
    folder.mkdir()
    t = np.arange(SR * 4) / SR
    tone = 0.3 * np.sin(2 * np.pi * 330 * t) * (t >= 2.0)  # silent first half
    for name in ("bass", "vocals"):
        sf.write(folder / f"{name}.wav", np.stack([tone, tone], 1).astype(np.float32), SR)
    source = StemFolderSource(tmp_path)
    excerpt = SR // 2

    def levels(threshold):
        sampler = ExcerptSampler(source, frames=excerpt, silence_threshold_db=threshold)
        rng = np.random.default_rng(3)
        return [level_db(sampler.sample(rng)["sources"]) for _ in range(20)]

    assert min(levels(None)) < -100  # without rejection some excerpts are silent
    assert min(levels(-60.0)) > -60.0


def test_augmented_mixture_is_sum_of_augmented_sources(coded_source):
    sampler = ExcerptSampler(coded_source, frames=4096, coherent=True)
    augment = Augmentation(gain=True, channel_swap=True, time_stretch=True)
    example = sampler.sample(np.random.default_rng(4), augment)
    assert example["sources"].shape == (4, 4096, 2)
    np.testing.assert_allclose(example["mixture"], example["sources"].sum(0), rtol=1e-5)


def test_sampler_rejects_bad_arguments(coded_source):
    with pytest.raises(JaxsepError, match="piano"):
        ExcerptSampler(coded_source, frames=100, stems=("piano",))
    with pytest.raises(JaxsepError, match="exactly one"):
        ExcerptSampler(coded_source, frames=100, seconds=1.0)

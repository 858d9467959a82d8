"""The JAX BSSEval v4 gives museval's framewise scores, jitted, at a fraction of the cost."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.signal

from jaxsep.evaluate.bsseval import bss_eval_v4, bss_eval_v4_traced, frame_count

SAMPLE_RATE = 44100
TOLERANCE_DB = 1e-6  # both sides are float64; the bar is 0.01 dB


def museval_scores(references, estimates, window, hop):
    import museval

    scores = museval.evaluate(references, estimates, win=window, hop=hop, mode="v4", padding=False)
    return [np.asarray(s, np.float64) for s in scores]


def assert_matches_museval(references, estimates, window, hop):
    expected = museval_scores(references, estimates, window, hop)
    got = bss_eval_v4(references, estimates, window=window, hop=hop)
    for name, want, have in zip(("SDR", "ISR", "SIR", "SAR"), expected, got):
        assert have.shape == want.shape, name
        np.testing.assert_allclose(have, want, rtol=0, atol=TOLERANCE_DB, err_msg=name)
    return got


def coloured_noise(rng, n_sources, seconds):
    """Stereo sources with different spectral tilts and partly correlated channels."""
    length = int(seconds * SAMPLE_RATE)
    sources = rng.standard_normal((n_sources, length, 2))
    sources[..., 1] += 0.5 * sources[..., 0]
    for s in range(n_sources):
        sources[s] = scipy.signal.lfilter([1.0], [1.0, -0.3 * (s + 1)], sources[s], axis=0)
    return sources


def test_noisy_leaky_filtered_estimates_with_silent_frame_match_museval():
    rng = np.random.default_rng(0)
    references = coloured_noise(rng, 3, 3.4)  # 3 full frames, the 0.4 s tail is dropped
    references[1, SAMPLE_RATE : 2 * SAMPLE_RATE] = 0.0  # silent reference frame -> NaN
    estimates = references + 0.3 * references[[2, 0, 1]]
    estimates += 0.1 * rng.standard_normal(references.shape)
    estimates[2] = scipy.signal.lfilter([0.6, 0.3, 0.1], [1.0], estimates[2], axis=0)
    sdr, isr, sir, sar = assert_matches_museval(references, estimates, SAMPLE_RATE, SAMPLE_RATE)
    assert sdr.shape == (3, 3)
    for scores in (sdr, isr, sir, sar):
        assert np.all(np.isnan(scores[:, 1])) and np.all(np.isfinite(scores[:, [0, 2]]))


def test_overlapping_frames_lowpassed_references_and_silent_estimate_frame_match_museval():
    rng = np.random.default_rng(1)
    references = coloured_noise(rng, 2, 2.3)
    lowpass = scipy.signal.butter(6, 0.6)
    references = scipy.signal.lfilter(*lowpass, references, axis=1)
    references += 1e-4 * rng.standard_normal(references.shape)  # ill-conditioned Gram
    estimates = 0.8 * references + 0.2 * references[::-1]
    estimates += 0.05 * rng.standard_normal(references.shape)
    window, hop = SAMPLE_RATE // 2, SAMPLE_RATE // 2 - 1000
    # the estimate's channels cancel over all of frame 1: museval calls that frame silent
    frame = slice(hop, hop + window)
    estimates[0, frame, 1] = -estimates[0, frame, 0]
    sdr, *_ = assert_matches_museval(references, estimates, window, hop)
    assert sdr.shape == (2, 4) and frame_count(references.shape[1], window, hop) == 4
    assert np.all(np.isnan(sdr[:, 1])) and np.all(np.isfinite(sdr[:, [0, 2, 3]]))


def test_window_longer_than_signal_scores_one_whole_signal_frame_like_museval():
    rng = np.random.default_rng(2)
    references = coloured_noise(rng, 2, 0.5)
    estimates = references + 0.2 * rng.standard_normal(references.shape)
    sdr, *_ = assert_matches_museval(references, estimates, SAMPLE_RATE, SAMPLE_RATE)
    assert sdr.shape == (2, 1)


def test_singular_gram_of_a_pure_tone_falls_back_to_museval_dense_solve():
    rng = np.random.default_rng(3)
    time = np.arange(int(1.5 * SAMPLE_RATE)) / SAMPLE_RATE
    tone = np.sin(2 * np.pi * 220.0 * time) * (1.0 + 0.5 * np.sin(2 * np.pi * 0.7 * time))
    references = np.stack([np.stack([tone, 0.8 * tone], -1), rng.standard_normal((time.size, 2))])
    estimates = references + 0.05 * references[::-1] + 0.01 * rng.standard_normal(references.shape)
    sdr, isr, sir, sar = bss_eval_v4(references, estimates, window=SAMPLE_RATE, hop=SAMPLE_RATE)
    expected = museval_scores(references, estimates, SAMPLE_RATE, SAMPLE_RATE)
    for name, want, have in zip(("SDR", "ISR", "SIR", "SAR"), expected, (sdr, isr, sir, sar)):
        # Levinson breaks down here; the dense LU fallback reproduces museval's own solve
        np.testing.assert_allclose(have, want, rtol=0, atol=1e-3, err_msg=name)


@pytest.mark.parametrize("length", [10, 57, 284, 285, 286, 1000])
def test_block_correlations_equal_direct_sums_at_every_step_boundary(length):
    """max_lag 8: 57-sample blocks, 4 per loop step (228 samples), the tail zero-padded."""
    from jaxsep.evaluate.bsseval import _lagged_correlations

    rng = np.random.default_rng(length)
    refs, ests = rng.standard_normal((2, 3, length, 2))
    with jax.enable_x64(True):
        rho = np.asarray(_lagged_correlations(jnp.asarray(refs), jnp.asarray(ests), 8))
    x = np.moveaxis(refs, 2, 1).reshape(6, length)
    y = np.concatenate([x, np.moveaxis(ests, 2, 1).reshape(6, length)])
    direct = np.zeros((6, 12, 8))
    for k in range(8):
        direct[..., k] = x[:, : length - k] @ y[:, k:].T if k < length else 0.0
    np.testing.assert_allclose(rho, direct, rtol=0, atol=1e-12 * np.abs(direct).max())


@pytest.mark.parametrize(
    ("length", "window", "hop"),
    [(100, 30, 30), (100, 30, 7), (100, 100, 10), (100, 150, 50), (101, 20, 20), (99, 20, 20)],
)
def test_frame_count_follows_museval_framing(length, window, hop):
    from museval.metrics import Framing

    framer = Framing(window, hop, length)
    assert frame_count(length, window, hop) == framer.nwin == len(list(framer))


def test_traced_core_jits_and_vmaps_over_songs_in_float64():
    rng = np.random.default_rng(4)
    songs = np.stack([coloured_noise(rng, 2, 0.3) for _ in range(2)])
    estimates = songs + 0.2 * rng.standard_normal(songs.shape)
    window = hop = SAMPLE_RATE // 10
    # short filters: under vmap the dense fallback branches are always evaluated
    expected = [
        bss_eval_v4(r, e, window=window, hop=hop, filter_len=64) for r, e in zip(songs, estimates)
    ]
    with jax.enable_x64(True):
        score = functools.partial(bss_eval_v4_traced, window=window, hop=hop, filter_len=64)
        batched = jax.jit(jax.vmap(score))(jnp.asarray(songs), jnp.asarray(estimates))
        assert all(s.dtype == jnp.float64 for s in batched)
    for song, want in enumerate(expected):
        for have, each in zip(batched, want):
            assert have[song].shape == (2, 3)
            np.testing.assert_allclose(np.asarray(have[song]), each, rtol=0, atol=1e-9)


def test_speed_tool_writes_a_record_the_table_renders(run_record_tool, tmp_path):
    """tools/bench_bsseval.py at a tiny size: both sides agree and the record says what ran."""
    from jaxsep.bench.table import read_records, render_table

    record = run_record_tool(
        "bench_bsseval", "--seconds", "2.5", "--sources", "2", "--repeats", "1"
    )
    assert record["signals"].startswith("2.5 s x 2 stereo sources")
    assert record["max_abs_diff_db"] < TOLERANCE_DB
    assert record["jax_version"] == jax.__version__ and record["git_revision"]
    assert "--sources 2" in record["command"] and len(record["load_avg_start"]) == 3
    table = render_table(read_records([tmp_path / "records"]))
    assert f"| {record['signals']} | {record['device']}" in table


def test_speed_tool_set_mode_scores_each_length_and_the_table_renders_it(run_record_tool, tmp_path):
    from jaxsep.bench.table import read_records, render_table

    record = run_record_tool("bench_bsseval", "--set", "1.5,2.25", "--sources", "2")
    assert record["bench"] == "bsseval_set" and record["song_seconds"] == [1.5, 2.25]
    assert len(record["per_song_s"]) == 2 and all(t > 0 for t in record["per_song_s"])
    assert record["total_s"] == pytest.approx(sum(record["per_song_s"]), abs=2e-3)
    assert record["peak_rss_gb"] > 0 and "--set 1.5,2.25" in record["command"]
    # two stereo sources of 2.25 s in float64 are 3 MB: an evaluation adds more than nothing
    # (its programs' buffers) and far less than the process holds
    assert len(record["added_gb_per_song"]) == 2
    assert 0 <= record["peak_added_gb"] < record["peak_rss_gb"]
    table = render_table(read_records([tmp_path / "records"]))
    assert f"| {record['signals']} | {record['device']} | {record['total_s']:.3g}" in table


def compiled_programs():
    """How many executables each of `bss_eval_v4`'s programs holds."""
    from jaxsep.evaluate import bsseval

    programs = (
        "_correlation_chunk_program",
        "_filters_program",
        "_filter_spectra_program",
        "_frame_group_program",
    )
    return {name: getattr(bsseval, name)._cache_size() for name in programs}


def test_tracks_of_new_lengths_compile_nothing_and_match_the_one_program_function():
    """`bss_eval_v4` feeds fixed-shape programs chunk by chunk: a second track of another length
    reuses every executable the first one compiled."""
    rng = np.random.default_rng(5)
    window = hop = SAMPLE_RATE // 8
    filter_len = 48  # a size no other test compiles
    before = compiled_programs()
    for seconds in (0.5, 0.7, 1.3):
        references = coloured_noise(rng, 2, seconds)
        estimates = references + 0.3 * rng.standard_normal(references.shape)
        staged = bss_eval_v4(references, estimates, window=window, hop=hop, filter_len=filter_len)
        assert staged[0].shape == (2, frame_count(len(references[0]), window, hop))
        if seconds == 0.5:
            after_first = compiled_programs()
            assert after_first == {name: count + 1 for name, count in before.items()}
    assert compiled_programs() == after_first
    with jax.enable_x64(True):  # the chunked programs compute the one-program function
        whole = bss_eval_v4_traced(
            jnp.asarray(references),
            jnp.asarray(estimates),
            window=window,
            hop=hop,
            filter_len=filter_len,
        )
    for have, want in zip(staged, whole, strict=True):
        np.testing.assert_allclose(have, np.asarray(want), rtol=0, atol=1e-9)


@pytest.mark.parametrize(("window", "hop", "frames_per_call"), [(500, 131, 1), (300, 450, 4)])
def test_many_chunks_and_frame_groups_score_like_the_one_program_function(
    window, hop, frames_per_call, monkeypatch
):
    """Short filters (8 taps: 57-sample blocks, 4 x 4 per call) so that a 1 s song spans many
    correlation chunks, the last one mostly zero padding; frames one per call (the default)
    and four per call, the last group part padding."""
    from jaxsep.evaluate import bsseval

    monkeypatch.setattr(bsseval, "FRAMES_PER_CALL", frames_per_call)
    rng = np.random.default_rng(window + hop)
    references = coloured_noise(rng, 3, 1.0)
    estimates = 0.9 * references + 0.2 * references[[1, 2, 0]]
    estimates += 0.1 * rng.standard_normal(references.shape)
    length = references.shape[1]
    _, block, step_len = bsseval._correlation_layout(8)
    chunk = bsseval.CORRELATION_STEPS_PER_CALL * step_len
    assert length > 10 * chunk and length % chunk < chunk / 2
    n_frames = frame_count(length, window, hop)
    assert n_frames > 10 * frames_per_call and n_frames % frames_per_call in (0, 2)
    staged = bss_eval_v4(references, estimates, window=window, hop=hop, filter_len=8)
    with jax.enable_x64(True):
        whole = bss_eval_v4_traced(
            jnp.asarray(references), jnp.asarray(estimates), window=window, hop=hop, filter_len=8
        )
    for have, want in zip(staged, whole, strict=True):
        assert have.shape == (3, n_frames) and np.all(np.isfinite(have))
        np.testing.assert_allclose(have, np.asarray(want), rtol=0, atol=1e-9)


def test_float32_inputs_are_scored_in_float64_without_a_whole_song_copy():
    """float32 estimates (what a separator returns) are cast chunk by chunk: same scores as
    float64 copies of them."""
    rng = np.random.default_rng(6)
    references = coloured_noise(rng, 2, 0.6).astype(np.float32)
    estimates = (references + 0.2 * rng.standard_normal(references.shape)).astype(np.float32)
    window = hop = SAMPLE_RATE // 8
    single = bss_eval_v4(references, estimates, window=window, hop=hop, filter_len=48)
    double = bss_eval_v4(
        references.astype(np.float64),
        estimates.astype(np.float64),
        window=window,
        hop=hop,
        filter_len=48,
    )
    for have, want in zip(single, double, strict=True):
        assert have.dtype == np.float64
        np.testing.assert_array_equal(have, want)

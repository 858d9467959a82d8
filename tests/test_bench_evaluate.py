"""tools/bench_evaluate.py: `jaxsep evaluate` timed and its peak memory read per allocator."""

import pytest

from jaxsep.bench.commands import run_jaxsep
from jaxsep.bench.pipeline import SAMPLE_RATE, write_corpus


def test_corpus_songs_take_their_own_lengths(tmp_path):
    import soundfile as sf

    write_corpus(tmp_path, songs=2, seconds=[0.5, 0.25])
    for song, seconds in (("song0", 0.5), ("song1", 0.25)):
        info = sf.info(tmp_path / song / "vocals.wav")
        assert (info.frames, info.channels) == (int(seconds * SAMPLE_RATE), 2)


def test_a_failing_jaxsep_command_stops_the_tool_with_its_error(tmp_path):
    with pytest.raises(SystemExit, match="jaxsep evaluate --model .*no-such-model"):
        run_jaxsep("evaluate", "--model", str(tmp_path / "no-such-model"), "--data", str(tmp_path))


def test_evaluate_tool_records_time_and_peak_memory_per_allocator(run_record_tool, tmp_path):
    """One allocator and museval (no BSSEval compile) keep it short; the tool's own check that
    the allocators score alike needs two and runs in the real measurement."""
    record = run_record_tool(
        "bench_evaluate", "--songs", "1.5,1", "--ways", "system", "--bsseval", "museval",
        "--config", "configs/xumx.py:tiny",
    )  # fmt: skip
    assert record["song_seconds"] == [1.5, 1.0] and record["signals"].startswith("2 songs of 1-1.5")
    assert record["system_s"] > 0 and 0.1 < record["system_peak_rss_gb"] < 24
    assert "retain_s" not in record and record["bsseval"] == "museval"
    from jaxsep.bench.table import read_records, render_table

    table = render_table(read_records([tmp_path / "records"]))
    assert f"| configs/xumx.py:tiny | museval | system | {record['system_s']:.3g} |" in table

"""The bench's interleaved timer: both frameworks' calls alternate round by round, a failing
torch.compile variant becomes a recorded error, a failing eager one stops the bench."""

import pytest

from jaxsep.bench.harness import Timed, paired_ratio, time_interleaved, time_mode


def _logging_calls(log, names):
    return [lambda name=name: log.append(name) for name in names]


def test_calls_alternate_and_the_first_of_a_round_rotates():
    log = []
    seconds = time_interleaved(_logging_calls(log, "abc"), reps=3, warmup=2)
    assert log[:6] == list("aabbcc")  # warm-up: each one's untimed calls first
    assert log[6:] == list("abcbcacab")
    assert [len(s) for s in seconds] == [3, 3, 3]
    assert all(t >= 0 for s in seconds for t in s)


def _variant(log, name, fail_on=None, fallible=False):
    calls = {"n": 0}

    def call():
        calls["n"] += 1
        log.append(name)
        if calls["n"] == fail_on:
            raise RuntimeError(f"{name} broke\nsecond line")
        return name

    events = []
    timed = Timed(
        {"variant": name},
        train=call,
        infer=call,
        sync=lambda value: value,
        begin=lambda mode: events.append(("begin", mode)),
        end=lambda mode: events.append(("end", mode)),
        fallible=fallible,
    )
    return timed, events


def test_a_fallible_variant_that_fails_is_recorded_and_leaves_the_rotation():
    log = []
    jax_run, jax_events = _variant(log, "jax")
    compiled, compiled_events = _variant(log, "compile", fail_on=2, fallible=True)
    time_mode("train", [jax_run, compiled], reps=4, warmup=0)
    assert compiled.result["error"] == "RuntimeError: compile broke"
    assert "train" not in compiled.result and ("end", "train") not in compiled_events
    assert log.count("compile") == 2  # not called again after it failed
    assert jax_run.result["train"]["reps"] == 4 and len(jax_run.result["train_seconds"]) == 4
    assert jax_events == [("begin", "train"), ("end", "train")]
    time_mode("infer", [jax_run, compiled], reps=2, warmup=1)
    assert ("begin", "infer") not in compiled_events and "infer" in jax_run.result


def test_an_eager_variant_that_fails_stops_the_bench():
    log = []
    eager, _ = _variant(log, "eager", fail_on=1)
    with pytest.raises(RuntimeError, match="eager broke"):
        time_mode("train", [eager], reps=2, warmup=0)


def test_paired_ratio_is_the_median_of_per_round_ratios():
    # a machine slowed down 2x in round 2: medians of each side would pair slow with fast
    torch_s, jax_s = [1.0, 4.0, 1.2], [0.5, 2.0, 1.0]
    assert paired_ratio(torch_s, jax_s) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        paired_ratio([1.0], [1.0, 2.0])

"""`jaxsep demo` end to end on a tiny corpus: X-UMX training -> separation -> report + plots."""

import json
import re

import numpy as np
import pytest

from jaxsep.cli import main
from jaxsep.demo import demo_config, median_sdr, read_metrics, run_demo
from jaxsep.errors import JaxsepError

STEMS = ("bass", "drums", "vocals", "other")  # X-UMX's source order
TINY_CORPUS = {"songs": 3, "seconds": 3.0, "seed": 3, "test_fraction": 0.34}
TINY_SIZES = {
    "data.seconds": 1.0,
    "data.stats_examples": 2,
    "model.hidden_size": 16,
    "separation.segment": 1.5,
}


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("demo")
    return workdir, run_demo(workdir, steps=4, corpus=TINY_CORPUS, overrides=TINY_SIZES)


def test_report_has_both_sdr_columns_for_every_source(demo_run):
    workdir, report = demo_run
    assert report == workdir / "report.md"
    text = report.read_text()
    scores = json.loads((workdir / "scores.json").read_text())
    assert len(scores) == 1 and set(scores[0]["sdr"]) == set(STEMS)
    for stem in STEMS:
        row = re.search(rf"^\| {stem} \| (\S+) \| (\S+) \| (\S+) \|$", text, re.MULTILINE)
        assert row, f"no SDR row for {stem}:\n{text}"
        model_sdr, mixture_sdr, gain = (float(v) for v in row.groups())
        assert model_sdr == pytest.approx(scores[0]["sdr"][stem], abs=0.006)
        assert mixture_sdr == pytest.approx(scores[0]["mixture_sdr"][stem], abs=0.006)
        assert gain == pytest.approx(model_sdr - mixture_sdr, abs=0.011)
    assert "X-UMX" in text and "4 steps" in text


def test_plots_are_written_and_linked(demo_run):
    workdir, report = demo_run
    text = report.read_text()
    for name in ("loss.png", "sdr.png"):
        assert (workdir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({name})" in text


def test_model_dir_records_the_post_filter_and_metrics(demo_run):
    workdir, _ = demo_run
    config = json.loads((workdir / "train" / "model" / "config.json").read_text())
    assert config["model"] == "xumx" and config["sources"] == list(STEMS)
    assert config["separation"]["wiener_iterations"] == 1 and config["segment"] == 1.5
    assert config["model_kwargs"]["hidden_size"] == 16  # the override reached the model
    assert config["step"] == 4
    train, evals = read_metrics(workdir / "train" / "metrics.jsonl")
    assert [r["step"] for r in evals] == [2, 4]
    assert train and all(np.isfinite(r["loss"]) for r in train + evals)


def test_demo_config_is_the_xumx_baseline_sized_for_cpu(tmp_path):
    config = demo_config(tmp_path, steps=None)
    assert config.recipe == "xumx_vggish" and config.method == "baseline"
    assert config.num_steps == 300 and config.data.root == str(tmp_path)
    assert config.batch_size % 8 == 0  # conftest's 8 host devices: one example per device
    assert demo_config(tmp_path, steps=10).num_steps == 10


def test_median_sdr_takes_the_median_over_songs():
    rows = [{"sdr": {"bass": v}, "mixture_sdr": {"bass": -v}} for v in (1.0, 5.0, 2.0)]
    assert median_sdr(rows) == {"bass": (2.0, -2.0)}


def test_demo_cli_rejects_bad_steps(tmp_path, capsys):
    assert main(["demo", "--workdir", str(tmp_path / "w"), "--steps", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "steps" in err and "\n" not in err
    assert not (tmp_path / "w").exists()  # refused before any work


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"corpus": {"song": 3}}, "song"),
        ({"overrides": {"model.hidden": 8}}, "model.hidden"),
        ({"overrides": {"data.seconds": "long"}}, "data.seconds"),
    ],
)
def test_demo_rejects_bad_fields_in_one_line(tmp_path, kwargs, message):
    with pytest.raises(JaxsepError) as error:
        run_demo(tmp_path / "w", **kwargs)
    assert message in str(error.value) and "\n" not in str(error.value)

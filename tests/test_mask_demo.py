"""The mask recipe end to end through the core: synth corpus -> grain pipeline -> trainer -> model dir."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

import jaxsep
from jaxsep.cli import main
from jaxsep.data.synth import synthesize_corpus

STEMS = ("drums", "bass", "other", "vocals")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus") / "pop"
    synthesize_corpus(root, songs=3, seconds=2.0, domain="pop", seed=3, test_fraction=0.34)
    return root


def test_train_cli_writes_a_loadable_model(corpus, tmp_path):
    workdir = tmp_path / "run"
    argv = ["train", "--config", "configs/mask_demo.py:tiny", "--workdir", str(workdir)]
    argv += ["--data", str(corpus), "--config.data.setup_file=synth.yaml"]
    assert main(argv) == 0

    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"]
    assert [r["step"] for r in train] == [2, 4, 6]
    evals = [r for r in records if r["split"] == "eval"]
    assert [r["step"] for r in evals] == [3, 6]
    assert evals[1]["loss"] < evals[0]["loss"]  # same fixed validation excerpts both times

    model = jaxsep.load(workdir / "model")
    assert model.config["sources"] == list(STEMS)
    wave = jnp.asarray(np.random.default_rng(0).standard_normal((1, 4096, 2)), jnp.float32)
    magnitudes = model.module.apply(model.variables, wave)
    assert magnitudes.shape == (1, 4, 4096 // 128 + 1, 257, 2)
    stems = model.module.apply(model.variables, wave, method="separate")
    assert stems.shape == (1, 4, 4096, 2)


def test_train_cli_rejects_missing_data(tmp_path, capsys):
    argv = ["train", "--config", "configs/mask_demo.py:tiny", "--workdir", str(tmp_path / "w")]
    assert main(argv + ["--data", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert "nowhere" in err and "\n" not in err

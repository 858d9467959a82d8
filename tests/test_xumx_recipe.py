"""The xumx_vggish recipe end to end: tiny configs of every method through the real trainer on a
synthetic corpus, exported model directories that `jaxsep.load` reads."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

import jaxsep
from jaxsep.data.synth import synthesize_corpus
from jaxsep.models.embeddings import conditioning_features
from jaxsep.recipes.xumx_vggish import config_for, train


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("xumx_corpus") / "pop"
    synthesize_corpus(root, songs=3, seconds=2, domain="pop", seed=0, test_fraction=0.34)
    return root


def _config(method, corpus, **overrides):
    config = config_for(method, "tiny")
    config.data.root = str(corpus)
    config.data.setup_file = "synth.yaml"
    for key, value in overrides.items():
        section, _, name = key.rpartition("__")
        (config[section] if section else config)[name] = value
    return config


def _records(workdir):
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_baseline_lowers_the_fixed_eval_loss(corpus, tmp_path):
    workdir = tmp_path / "baseline"
    model_dir = train(_config("baseline", corpus), workdir)
    records = _records(workdir)
    evals = [r for r in records if r["split"] == "eval"]
    assert [r["step"] for r in evals] == [2, 4]
    assert evals[1]["loss"] < evals[0]["loss"]  # the same fixed validation excerpts
    assert all(np.isfinite(r["loss"]) for r in records)

    model = jaxsep.load(model_dir)
    assert model.config["model"] == "xumx" and "conditioning" not in model.config
    params = model.variables["params"]["bass"]
    assert params["input_mean"].shape == (186,)  # 16 kHz bandwidth at n_fft 512
    assert np.all(params["input_mean"] < 0) and np.all(params["input_scale"] > 0)  # -mean, 1/std
    wave = jnp.asarray(np.random.default_rng(0).standard_normal((1, 4096, 2)), jnp.float32)
    out = model.module.apply(model.variables, wave)
    assert out.shape == (1, 4, 4096 // 128 + 1, 257, 2)


def test_concat_model_needs_and_rebuilds_its_features(corpus, tmp_path):
    workdir = tmp_path / "concat"
    model_dir = train(_config("concat", corpus, num_steps=2, eval_every=0), workdir)
    assert all(np.isfinite(r["loss"]) for r in _records(workdir))
    model = jaxsep.load(model_dir)
    assert model.config["conditioning"]["embedding"] == "vggish"
    assert model.config["model_kwargs"]["extra_features"] == 128
    lstm = model.variables["params"]["vocals"]["lstm"]
    assert lstm["weight_ih_l0"].shape == (4 * 16, 32 + 128)
    wave = jnp.asarray(0.1 * np.random.default_rng(1).standard_normal((1, 44100, 2)), jnp.float32)
    extra = conditioning_features(model.config, wave)
    assert extra.shape == (1, 1 + 44100 // 128, 128)
    out = model.module.apply(model.variables, wave, extra=extra)
    assert out.shape == (1, 4, 1 + 44100 // 128, 257, 2) and bool(jnp.all(jnp.isfinite(out)))
    with pytest.raises(jaxsep.JaxsepError, match="extra"):
        model.module.apply(model.variables, wave)


@pytest.mark.parametrize("method", ["conreg", "disreg"])
def test_regularised_methods_train_and_export_xumx_only(corpus, tmp_path, method):
    workdir = tmp_path / method
    config = _config(method, corpus, num_steps=2, eval_every=0, transfer__embedding="random_logmel")
    model_dir = train(config, workdir)
    train_records = [r for r in _records(workdir) if r["split"] == "train"]
    assert [r["step"] for r in train_records] == [1, 2]
    for record in train_records:
        assert np.isfinite(record["loss"]) and np.isfinite(record[f"{method}_loss"])
        assert record[f"{method}_loss"] > 0
    model = jaxsep.load(model_dir)
    assert sorted(model.variables["params"]) == ["bass", "drums", "other", "vocals"]  # no head
    assert model.config["method"] == method and "conditioning" not in model.config

"""The xumx_vggish recipe end to end: tiny configs of every method through the real trainer on a
synthetic corpus, exported model directories that `jaxsep.load` reads."""

import dataclasses
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsep
from jaxsep.data.synth import synthesize_corpus
from jaxsep.data.tracks import MusdbSource
from jaxsep.evaluate import latent
from jaxsep.models import embeddings
from jaxsep.models.embeddings import conditioning_features, frozen_embedding
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
    out = jax.jit(model.module.apply)(model.variables, wave)  # one program, not op by op
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
    features = jax.jit(functools.partial(conditioning_features, model.config))
    extra = features(wave, model.variables["embedding"])
    assert extra.shape == (1, 1 + 44100 // 128, 128)
    out = jax.jit(model.module.apply)(model.variables, wave, extra=extra)
    assert out.shape == (1, 4, 1 + 44100 // 128, 257, 2) and bool(jnp.all(jnp.isfinite(out)))
    with pytest.raises(jaxsep.JaxsepError, match="extra"):
        model.module.apply(model.variables, wave)
    # the directory carries the frozen VGGish it was trained with (as the trainer held it);
    # skip_concat below: encoder (32) + BLSTM (2 x 16) features
    _, trained_with = frozen_embedding(model.config["conditioning"])
    assert sorted(model.variables["embedding"]) == sorted(trained_with)
    # the seeded random VGGish compiled once for the trainer and this call (not per call)
    assert embeddings._random_vggish_params._cache_size() == 1
    for stored, original in zip(
        jax.tree.leaves(model.variables["embedding"]), jax.tree.leaves(trained_with)
    ):
        np.testing.assert_array_equal(stored, np.asarray(original))
    _check_concat_separation_and_latents(model, corpus)


def _check_concat_separation_and_latents(model, corpus):
    """Separation and latents of a Concat model read the embedding from its variables: a program
    argument (not 288 MB of constants rebuilt from config.json), so changing it changes the
    result, and a directory without it fails in one line."""
    audio = 0.1 * np.random.default_rng(2).standard_normal((3 * 44100, 2)).astype(np.float32)
    stems = jaxsep.Separator(model, segment=1.0, batch_size=2)(audio, 44100)
    assert sorted(stems) == ["bass", "drums", "other", "vocals"]
    assert all(s.shape == audio.shape and np.all(np.isfinite(s)) for s in stems.values())
    silenced = dict(model.variables)
    silenced["embedding"] = jax.tree.map(np.zeros_like, model.variables["embedding"])
    other = dataclasses.replace(model, variables=silenced)
    changed = jaxsep.Separator(other, segment=1.0, batch_size=2)(audio, 44100)
    assert max(np.abs(changed[k] - stems[k]).max() for k in stems) > 1e-6
    source = MusdbSource(corpus, subset="test", stems=tuple(model.config["sources"]))
    kwargs = dict(excerpts=2, seconds=1.0, frames_per_excerpt=5, batch_size=2)
    X, labels = latent.collect_latents(model, source, **kwargs)
    X_silenced, _ = latent.collect_latents(other, source, **kwargs)
    assert X.shape == (2 * 4 * 5, 64) and np.all(np.isfinite(X)) and len(labels) == len(X)
    assert np.abs(X - X_silenced).max() > 1e-6
    old = dict(model.variables)
    del old["embedding"]
    old = dataclasses.replace(model, variables=old)
    with pytest.raises(jaxsep.JaxsepError, match="frozen embedding's parameters .* --workdir"):
        jaxsep.Separator(old, segment=1.0, batch_size=2)(audio, 44100)
    with pytest.raises(jaxsep.JaxsepError, match="frozen embedding's parameters"):
        latent.collect_latents(old, source, **kwargs)


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

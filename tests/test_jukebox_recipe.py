"""unmix recipe end to end on a synthetic corpus: stage 1, stage 2, deployment, SDR."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxsep
from jaxsep.config import load_config
from jaxsep.data.synth import synthesize_corpus
from jaxsep.data.tracks import MusdbSource
from jaxsep.errors import JaxsepError
from jaxsep.modeldir import load_variables, save_model_dir
from jaxsep.models import unmix
from jaxsep.models.vqvae import VQVAE
from jaxsep.recipes import jukebox_unmix as recipe

STEMS = ("drums", "bass", "other", "vocals")
STEM = "vocals"


def _config(name, root, *overrides):
    config = load_config(f"configs/{name}.py:tiny", ["config.data.overfit_batches=1", *overrides])
    config.data.root, config.data.setup_file = str(root), "synth.yaml"
    return config


def _losses(workdir, split="train"):
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [r["loss"] for r in map(json.loads, lines) if r["split"] == split]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus") / "pop"
    synthesize_corpus(root, songs=3, seconds=2, domain="pop", seed=0, test_fraction=0.34)
    return root


@pytest.fixture(scope="module")
def pretrained(corpus, tmp_path_factory):
    """A 'public weights' stand-in: a tiny vqvae model dir with a random non-zero codebook."""
    cfg = recipe._model_config(_config("vqvae_stage1", corpus))
    variables = VQVAE(cfg).init(jax.random.key(3), jnp.zeros((1, 4096, 1)))
    k = 0.05 * jax.random.normal(jax.random.key(4), (cfg.l_bins, cfg.emb_width))
    variables["codebook"]["quantizers_0"]["k"] = k
    path = tmp_path_factory.mktemp("pretrained") / "model"
    config = {"model": "vqvae", "model_kwargs": cfg.to_dict(), "stem": STEM}
    return save_model_dir(path, config, variables)


@pytest.fixture(scope="module")
def stage1(corpus, pretrained, tmp_path_factory):
    """Fine-tune the stand-in with a frozen codebook (the published runs' effective setting)."""
    workdir = tmp_path_factory.mktemp("stage1")
    config = _config(
        "vqvae_stage1",
        corpus,
        f"config.init_checkpoint={pretrained}",
        "config.codebook_update=frozen",
    )
    return recipe.train(config, workdir), workdir


@pytest.fixture(scope="module")
def stage2(corpus, stage1, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("stage2")
    config = _config("vqvae_stage2", corpus, f"config.stem_model={stage1[0]}")
    return recipe.train(config, workdir), workdir


def test_stage1_lowers_loss_and_keeps_frozen_codebook(stage1, pretrained):
    model_dir, workdir = stage1
    losses = _losses(workdir)
    # a frozen random codebook slows learning down: ~12% in 6 steps on this fixed batch
    assert len(losses) == 6 and losses[-1] < 0.95 * losses[0]
    assert np.isfinite(_losses(workdir, "eval")).all() and len(_losses(workdir, "eval")) == 1
    model = jaxsep.load(model_dir)
    assert model.config["stem"] == STEM and set(model.config["bandwidth"]) == {"l1", "l2", "spec"}
    assert all(v > 0 for v in model.config["bandwidth"].values())
    before = load_variables(pretrained)["codebook"]["quantizers_0"]
    after = model.variables["codebook"]["quantizers_0"]
    np.testing.assert_array_equal(after["k"], before["k"])  # bit-identical
    # restore_k: E = (4096 // 8) tokens / 256 codes = 2
    np.testing.assert_array_equal(after["k_elem"], np.full(256, 2.0, np.float32))


def test_stage1_from_scratch_learns_the_codebook_by_ema(corpus, tmp_path):
    config = _config("vqvae_stage1", corpus, "config.num_steps=2", "config.model.remat=true")
    model = jaxsep.load(recipe.train(config, tmp_path))
    codebook = model.variables["codebook"]["quantizers_0"]
    assert bool(codebook["initialised"]) and np.any(codebook["k"])  # init from the first batch
    assert np.all(np.isfinite(_losses(tmp_path)))
    assert not np.allclose(codebook["k_elem"], 1.0)  # two EMA updates moved the counts


def test_stage2_lowers_loss_and_exports_single_stem_model(stage2, stage1):
    model_dir, workdir = stage2
    losses = _losses(workdir)
    assert len(losses) == 6 and losses[-1] < 0.8 * losses[0]
    assert np.isfinite(_losses(workdir, "eval")).all() and len(_losses(workdir, "eval")) == 1
    model = jaxsep.load(model_dir)
    assert model.config["sources"] == [STEM] and isinstance(model.module, unmix.Unmix)
    stem_vars = load_variables(stage1[0])
    params = model.variables["params"][STEM]
    jax.tree.map(
        np.testing.assert_array_equal, params["decoders_0"], stem_vars["params"]["decoders_0"]
    )
    changed = jax.tree.map(
        lambda a, b: not np.array_equal(a, b),
        params["encoders_0"],
        stem_vars["params"]["encoders_0"],
    )
    assert all(jax.tree.leaves(changed))  # a mixture encoder, not the stem encoder


def test_exported_weights_are_the_parameter_ema():
    config = recipe.default_config()
    config.warmup_steps, config.param_ema, config.optimizer.lr = 2, 0.9, 0.1
    tx = recipe.make_unmix_optimizer(config)
    params = {"w": jnp.arange(3.0), "b": jnp.ones(())}
    state = {"params": params, "opt_state": tx.init(params)}
    ema = jax.tree.map(np.asarray, params)
    for step in range(4):
        grads = jax.tree.map(lambda p, s=step: jnp.sin(p + s), state["params"])
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"], lr_scale=1.0)
        new = optax.apply_updates(state["params"], updates)
        state = {"params": new, "opt_state": opt_state}
        ema = jax.tree.map(lambda e, p: 0.9 * e + 0.1 * np.asarray(p), ema, new)
        if step == 0:  # the warm-up's first update uses lr 0 (reference LambdaLR)
            jax.tree.map(np.testing.assert_array_equal, new, params)
    exported = recipe.exported_params(config, state)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), exported, ema)
    assert not np.allclose(exported["w"], state["params"]["w"])


def test_restore_k_from_public_checkpoint(fixtures_dir):
    kwargs, variables = recipe.load_pretrained(
        str(fixtures_dir / "jukebox" / "vqvae_5b_width8.pth.tar")
    )
    assert kwargs["levels"] == 1 and set(variables["params"]) == {"encoders_0", "decoders_0"}
    config = recipe.default_config()  # paper chunk 393216 -> 49152 tokens / 2048 codes = 24
    cfg = recipe._model_config(config, kwargs)
    codebook = recipe._restore_k(config, cfg, variables["codebook"])["quantizers_0"]
    k = variables["codebook"]["quantizers_0"]["k"]
    np.testing.assert_array_equal(codebook["k"], k)
    np.testing.assert_allclose(codebook["k_sum"], 24.0 * k, rtol=1e-6)
    np.testing.assert_array_equal(codebook["k_elem"], np.full(2048, 24.0, np.float32))


def test_stage2_needs_a_stem_model(corpus, tmp_path):
    with pytest.raises(JaxsepError, match="stem_model"):
        recipe.train(_config("vqvae_stage2", corpus), tmp_path)


def test_chunked_deployment_keeps_length_and_pads_the_tail(stage2):
    model = jaxsep.load(stage2[0])
    chunk = 4096
    length = 2 * chunk + 1003  # the tail is neither a full chunk nor a multiple of the hop
    audio = np.random.default_rng(0).standard_normal((length, 2)).astype(np.float32) * 0.1
    out = unmix.separate_chunked(model.module, model.variables, audio, chunk=chunk, batch_size=2)
    assert out.shape == (1, length, 1)
    mono = audio.mean(axis=1, keepdims=True)
    first = model.module.apply(model.variables, mono[None, :chunk])
    np.testing.assert_allclose(out[:, :chunk], first[0], rtol=1e-5, atol=1e-6)
    tail = np.zeros((1, chunk, 1), np.float32)
    tail[0, :1003] = mono[2 * chunk :]
    padded = model.module.apply(model.variables, tail)[0, :, :1003]
    np.testing.assert_allclose(out[:, 2 * chunk :], padded, rtol=1e-5, atol=1e-6)
    # same batch: XLA:CPU's kernels may round differently per batch size (AVX2 hosts do)
    exact = unmix.separate_chunked(
        model.module, model.variables, audio, chunk=chunk, batch_size=2, tail="exact"
    )
    assert exact.shape == (1, length, 1)
    np.testing.assert_array_equal(exact[:, : 2 * chunk], out[:, : 2 * chunk])
    assert np.all(exact[:, -(1003 % 8) :] == 0)  # decoder output zero-padded to the tail length


def test_deployed_set_merges_stems(stage2, tmp_path):
    model = jaxsep.load(stage2[0])
    other = jax.tree.map(lambda a: a, model.variables)
    other = {c: {"drums": v[STEM]} for c, v in other.items()}
    other["params"]["drums"]["encoders_0"] = jax.tree.map(
        lambda a: -a, other["params"]["drums"]["encoders_0"]
    )
    drums_dir = save_model_dir(
        tmp_path / "drums",
        {
            **model.config,
            "sources": ["drums"],
            "model_kwargs": {**model.config["model_kwargs"], "sources": ["drums"]},
        },
        other,
    )
    deployed = jaxsep.load(
        unmix.build_deployed({"drums": drums_dir, STEM: stage2[0]}, tmp_path / "set")
    )
    assert deployed.config["sources"] == ["drums", STEM]
    wave = jnp.asarray(np.random.default_rng(1).standard_normal((2, 4096, 2)) * 0.1, jnp.float32)
    out = unmix.separate_waveforms(deployed.module, deployed.variables, wave)
    assert out.shape == (2, 2, 4096, 2)
    single = model.module.apply(model.variables, wave)
    np.testing.assert_allclose(out[:, 1], single[:, 0], rtol=1e-5, atol=1e-6)
    # what cannot be merged fails in one line naming the directory
    with pytest.raises(JaxsepError, match="no stage-2 model directories"):
        unmix.build_deployed({}, tmp_path / "none")
    with pytest.raises(JaxsepError, match=f"{stage2[0]}: not a single-stem 'bass' unmix"):
        unmix.build_deployed({"bass": stage2[0]}, tmp_path / "wrong_stem")
    kwargs = model.config["model_kwargs"]
    wider = {**kwargs, "sources": ["drums"]}
    wider["vqvae"] = {**kwargs["vqvae"], "width": 2 * kwargs["vqvae"]["width"]}
    wider_dir = save_model_dir(
        tmp_path / "wider", {**model.config, "sources": ["drums"], "model_kwargs": wider}, other
    )
    with pytest.raises(JaxsepError, match=f"{wider_dir}: VQ-VAE config differs"):
        unmix.build_deployed({STEM: stage2[0], "drums": wider_dir}, tmp_path / "mixed")
    two_levels = {"levels": 2, "downs_t": [3, 2], "strides_t": [2, 2], "multipliers": [2, 1]}
    with pytest.raises(JaxsepError, match="levels=1, got 2"):
        unmix.Model({**kwargs["vqvae"], **two_levels}, [STEM])


def test_sdr_of_tiny_stage2_vs_untrained_encoder(stage2, stage1, corpus, record_property):
    model = jaxsep.load(stage2[0])
    test_source = MusdbSource(corpus, subset="test", stems=STEMS)
    trained = recipe.evaluate(model, test_source, batch_size=4)
    cfg = model.module.config
    random_encoder = unmix.MixtureEncoder(cfg).init(jax.random.key(9), jnp.zeros((1, 4096, 1)))
    untrained_vars = unmix.stage2_variables(
        STEM, random_encoder["params"], load_variables(stage1[0])
    )
    untrained = recipe.evaluate(
        jaxsep.modeldir.Model(model.module, untrained_vars, model.config), test_source, batch_size=4
    )
    overlap = recipe.evaluate(model, test_source, mode="overlap_add", batch_size=8)
    for result in (trained, untrained, overlap):
        assert set(result["mean"]) == {STEM, "Total"}
        assert np.isfinite(result["mean"]["Total"]) and result["real_time_factor"] > 0
        assert result["mean"]["Total"] == pytest.approx(result["mean"][STEM])
    report = {
        "trained_sdr": trained["mean"][STEM],
        "untrained_sdr": untrained["mean"][STEM],
        "overlap_add_sdr": overlap["mean"][STEM],
        "real_time_factor": trained["real_time_factor"],
    }
    record_property("unmix_tiny_sdr", report)
    print("unmix tiny stage-2 SDR:", report)


def test_deploy_tool_and_separate_cli(stage2, tmp_path, capsys, load_tool):
    import soundfile as sf

    from jaxsep.cli import main as jaxsep_main

    tool = load_tool("deploy_unmix")
    assert tool.main(["--stem", "vocals", "--out", str(tmp_path / "bad")]) == 2
    assert "STEM=DIR" in capsys.readouterr().err
    deployed = tmp_path / "deployed"
    assert tool.main(["--stem", f"{STEM}={stage2[0]}", "--out", str(deployed)]) == 0
    song = tmp_path / "song.wav"
    audio = np.random.default_rng(3).standard_normal((10_000, 2)).astype(np.float32) * 0.1
    sf.write(song, audio, 44100)
    assert (
        jaxsep_main(["separate", str(song), "--model", str(deployed), "-o", str(tmp_path / "out")])
        == 0
    )
    stem, rate = sf.read(tmp_path / "out" / "song" / f"{STEM}.wav")
    assert rate == 44100 and stem.shape[0] == audio.shape[0] and np.isfinite(stem).all()

"""ChimeraNet transfer recipe: every mode through the real trainer on tiny synthetic corpora,
freezing, fine-tuning progress, the Separator hook and excerpt SI-SDR evaluation."""

import json
from pathlib import Path

import jax
import numpy as np
import pytest

import jaxsep
from jaxsep.audio.io import resample_audio
from jaxsep.config import load_config
from jaxsep.data.synth import synthesize_corpus
from jaxsep.data.tracks import StemFolderSource
from jaxsep.errors import JaxsepError
from jaxsep.evaluate.excerpts import compare_models, excerpt_si_sdr, summarize
from jaxsep.modeldir import Model, load, save_model_dir
from jaxsep.models.chimera import separate_waveforms
from jaxsep.recipes import chimera_transfer as recipe


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    root = tmp_path_factory.mktemp("chimera_corpora")
    synthesize_corpus(root / "pop", songs=3, seconds=3.0, domain="pop", test_fraction=0.34)
    synthesize_corpus(root / "chorale", songs=2, seconds=3.0, domain="chorale", test_fraction=0.5)
    return root


def tiny(kind: str, root, domain: str, **overrides):
    config = recipe.variant_config(kind, f"tiny,{domain}")
    config.data.root = str(root / domain)
    config.num_steps = 3
    config.eval_every = 3
    config.log_every = 1
    config.async_checkpointing = False
    config.data.seconds = 0.25
    config.data.eval_examples = 8
    config.model.update({"hidden": 8, "layers": 1, "embedding_dim": 4})
    for key, value in overrides.items():
        node = config
        *parents, leaf = key.split(".")
        for name in parents:
            node = node[name]
        node[leaf] = value
    return config


@pytest.fixture(scope="module")
def pretrained(corpora, tmp_path_factory):
    config = tiny("pretrain", corpora, "pop", num_steps=4)
    return recipe.train(config, tmp_path_factory.mktemp("pretrain"))


@pytest.fixture(scope="module")
def mask_finetuned(corpora, pretrained, tmp_path_factory):
    config = tiny(
        "finetune",
        corpora,
        "chorale",
        mode="finetune_mask",
        pretrained=str(pretrained),
        eval_every=0,
    )
    config.optimizer.lr = 1e-2
    return recipe.train(config, tmp_path_factory.mktemp("finetune_mask"))


def _leaves(variables):
    return {
        jax.tree_util.keystr(path): np.asarray(leaf)
        for path, leaf in jax.tree_util.tree_leaves_with_path(variables)
    }


def test_pretrain_is_dc_only_and_writes_a_model_dir(pretrained):
    model = load(pretrained)
    assert model.config["mode"] == "pretrain" and model.config["alpha"] == 1.0
    assert model.config["sources"] == ["vocals", "accompaniment"]
    assert model.config["sample_rate"] == 16_000 and model.config["channels"] == 1
    records = [
        json.loads(x) for x in (pretrained.parent / "metrics.jsonl").read_text().split("\n") if x
    ]
    train_records = [r for r in records if r["split"] == "train"]
    assert len(train_records) == 4
    assert all(r["loss"] == pytest.approx(r["dc"]) for r in train_records)
    assert any(r["split"] == "eval" for r in records)
    history = np.load(pretrained / recipe.HISTORY_FILE)
    assert history.shape == (4,) and np.all(history > 0)
    assert set(model.variables) == {"params", "batch_stats"}


def test_mask_only_finetune_freezes_body_and_batch_norm(pretrained, mask_finetuned):
    before, after = _leaves(load(pretrained).variables), _leaves(load(mask_finetuned).variables)
    assert before.keys() == after.keys()
    mask_keys = [k for k in before if "'mask'" in k]
    assert len(mask_keys) == 2
    for key in before:
        if key in mask_keys:
            assert not np.array_equal(before[key], after[key]), key
        else:
            np.testing.assert_array_equal(before[key], after[key], err_msg=key)
    assert any("running_mean" in k for k in before)  # BN statistics were among the checked


def test_whole_finetune_improves_a_fixed_validation_batch(corpora, pretrained, tmp_path):
    config = tiny(
        "finetune",
        corpora,
        "chorale",
        pretrained=str(pretrained),
        num_steps=12,
        eval_every=0,
        autoclip_init="carry",
    )
    config.optimizer.lr = 1e-2
    model_dir = recipe.train(config, tmp_path / "whole")
    module = recipe.ChimeraNet(**recipe.model_kwargs(config))
    evaluate = recipe.batched_loss(module, 0.01, recipe.validation_batch(config), 8)

    def loss_of(path):
        variables = load(path).variables
        return evaluate(variables["params"], {"batch_stats": variables["batch_stats"]})["loss"]

    assert loss_of(model_dir) < 0.9 * loss_of(pretrained)
    before, after = _leaves(load(pretrained).variables), _leaves(load(model_dir).variables)
    assert all(not np.array_equal(before[k], after[k]) for k in before if "recurrent" in k)
    # "carry": the fine-tune's AutoClip history continues the pre-training's
    history = np.load(model_dir / recipe.HISTORY_FILE)
    np.testing.assert_array_equal(history[:4], np.load(pretrained / recipe.HISTORY_FILE))
    assert history.shape == (16,)


def test_scratch_baseline_and_config_errors(corpora, tmp_path):
    # trained with bfloat16 activations (config.model.dtype), the model dir keeps float32 weights
    config = tiny("scratch", corpora, "chorale", eval_every=0, **{"model.dtype": "bfloat16"})
    assert recipe.variant_config("scratch", "tiny").num_steps == sum(recipe.TINY_STEPS.values())
    model = load(recipe.train(config, tmp_path / "scratch"))
    assert model.config["model_kwargs"]["dtype"] == "bfloat16"
    assert {leaf.dtype for leaf in jax.tree.leaves(model.variables)} == {np.dtype("float32")}
    assert model.config["mode"] == "scratch" and model.config["alpha"] == 0.01
    assert model.config["sources"] == ["soprano", "accompaniment"]
    with pytest.raises(JaxsepError, match="mode"):
        recipe.train(tiny("scratch", corpora, "chorale", mode="bogus"), tmp_path / "x")
    with pytest.raises(JaxsepError, match="pretrained"):
        recipe.train(tiny("finetune", corpora, "chorale"), tmp_path / "y")
    with pytest.raises(ValueError, match="unknown variant"):
        recipe.variant_config("pretrain", "tiny,huge")


def test_config_files_select_mode_domain_and_augmentation():
    configs = Path(__file__).resolve().parents[1] / "configs"
    pretrain = load_config(f"{configs / 'chimera_pretrain.py'}:pitch,stretch,incoherent")
    assert pretrain.mode == "pretrain" and pretrain.num_steps == 10_000
    assert pretrain.data.augment.pitch_shift and pretrain.data.augment.time_stretch
    assert not pretrain.data.coherent and pretrain.model.hidden == 500
    assert pretrain.optimizer.autoclip_percentile == 10.0 and pretrain.plateau.factor == 0.5
    mask = load_config(f"{configs / 'chimera_finetune.py'}:mask,fof,tiny")
    assert mask.mode == "finetune_mask" and mask.data.stems == ("guitar", "backing")
    assert mask.num_steps == recipe.TINY_STEPS["finetune"] and mask.model.hidden == 32
    scratch = load_config(str(configs / "chimera_scratch.py"))
    assert scratch.mode == "scratch" and scratch.num_steps == 12_000
    assert scratch.data.stems == ("soprano", "accompaniment")


def test_mono_resampled_source_matches_whole_track_resampling(corpora):
    inner = StemFolderSource(corpora / "pop" / "train", stems=["vocals"])
    source = recipe.MonoResampledSource(inner, 16_000)
    whole = inner.read(0, "vocals", 0, inner.num_frames(0)).mean(axis=1, keepdims=True)
    reference = resample_audio(whole, inner.sample_rate, 16_000)
    window = source.read(0, "vocals", 4_000, 8_000)
    assert window.shape == (8_000, 1) and source.channels == 1
    scale = np.max(np.abs(reference[4_000:12_000]))
    np.testing.assert_allclose(window, reference[4_000:12_000], atol=1e-3 * scale)


def _forced_mask_model(model: Model, bias: float) -> Model:
    params = jax.tree.map(np.array, model.variables["params"])
    params["mask"]["kernel"][:] = 0.0
    params["mask"]["bias"][:] = bias
    return Model(model.module, {**model.variables, "params": params}, model.config)


def test_separator_hook_downmixes_and_mask_of_one_returns_the_mixture(mask_finetuned):
    model = load(mask_finetuned)
    stereo = (0.1 * np.random.default_rng(0).standard_normal((6_000, 2))).astype(np.float32)
    stems = jaxsep.Separator(model, segment=0.25)(stereo, 16_000)
    assert list(stems) == ["soprano", "accompaniment"]
    assert all(s.shape == (6_000, 1) and np.isfinite(s).all() for s in stems.values())
    ones = jaxsep.Separator(_forced_mask_model(model, 40.0), segment=0.25)(stereo, 16_000)
    mono = stereo.mean(axis=1, keepdims=True)
    for stem in ones.values():
        np.testing.assert_allclose(stem, mono, atol=1e-5)
    # the k-means embedding head gives a binary partition: its stems sum to the mixture
    wave = stereo[None, :4_000]
    parts = np.asarray(separate_waveforms(model.module, model.variables, wave, head="kmeans"))
    assert parts.shape == (1, 2, 4_000, 2)
    np.testing.assert_allclose(parts.sum(axis=1), wave, atol=1e-5)
    kmeans = Model(model.module, model.variables, {**model.config, "separation_head": "kmeans"})
    stems = jaxsep.Separator(kmeans, segment=0.25)(stereo, 16_000)
    np.testing.assert_allclose(sum(stems.values()), mono, atol=1e-5)


def test_excerpt_si_sdr_and_paired_wilcoxon(corpora, mask_finetuned, tmp_path):
    config = tiny("scratch", corpora, "chorale")
    sampler = recipe.make_sampler(config, recipe.build_source(config, "test"))
    model = load(mask_finetuned)
    scores = excerpt_si_sdr(model, sampler, num_excerpts=6, seed=3, batch_size=4)
    assert set(scores) == {"soprano", "accompaniment", "overall"}
    assert all(v.shape == (6,) and np.isfinite(v).all() for v in scores.values())
    np.testing.assert_allclose(scores["overall"], (scores["soprano"] + scores["accompaniment"]) / 2)
    again = excerpt_si_sdr(model, sampler, num_excerpts=6, seed=3, batch_size=8)
    np.testing.assert_allclose(again["overall"], scores["overall"], rtol=1e-5)  # same excerpts
    same = compare_models(scores, again)
    assert same["overall"]["mean_difference"] == pytest.approx(0.0, abs=1e-4)
    # a mask of ones returns the mixture: worse than a trained mask for the quieter source
    ones_dir = save_model_dir(
        tmp_path / "ones", model.config, _forced_mask_model(model, 40.0).variables
    )
    ones = excerpt_si_sdr(load(ones_dir), sampler, num_excerpts=6, seed=3, batch_size=4)
    result = compare_models(scores, ones)
    for stats in result.values():
        assert 0.0 <= stats["p_value"] <= 1.0 and -1.0 <= stats["effect_size"] <= 1.0
        assert stats["n"] <= 6 and stats["n_dropped"] == 0
    summary = summarize(scores)
    assert summary["overall"]["n"] == 6
    assert summary["overall"]["mean"] == pytest.approx(float(np.mean(scores["overall"])))
    with pytest.raises(JaxsepError, match="paired"):
        compare_models(scores, {k: v[:3] for k, v in ones.items()})


def test_frets_on_fire_domain_reads_guitar_and_backing(tmp_path):
    import soundfile

    rng = np.random.default_rng(0)
    for k in range(3):
        song = tmp_path / "fof" / f"song{k}"
        song.mkdir(parents=True)
        parts = ("guitar", "song", "rhythm") if k else ("guitar", "song")  # rhythm is optional
        for part in parts:
            audio = 0.1 * rng.standard_normal((44_100, 2)).astype(np.float32)
            soundfile.write(song / f"{part}.ogg", audio, 44_100)
    config = recipe.variant_config("finetune", "tiny,fof")
    config.data.root = str(tmp_path / "fof")
    source = recipe.build_source(config, config.data.train_split, ":2")
    assert source.stems == ("guitar", "backing") and len(source) == 2
    assert source.sample_rate == 16_000
    song = tmp_path / "fof" / "song1"
    files = [soundfile.read(song / f"{p}.ogg", dtype="float32")[0] for p in ("song", "rhythm")]
    reference = resample_audio(sum(files).mean(axis=1, keepdims=True), 44_100, 16_000)
    backing = source.read(1, "backing", 1_000, 2_000)
    scale = np.max(np.abs(reference[1_000:3_000]))
    np.testing.assert_allclose(backing, reference[1_000:3_000], atol=1e-3 * scale)
    with pytest.raises(JaxsepError, match="picks none"):
        recipe.build_source(config, "", "5:")

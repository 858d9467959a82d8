"""ChimeraNet against nussl golden outputs: small model (eval, train, one update), paper size."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxsep.errors import JaxsepError
from jaxsep.losses import chimera as losses
from jaxsep.models.chimera import ChimeraNet, mixture_magnitude, separate_with_mask
from jaxsep.nn.lstm import inference_layout
from jaxsep.train.state import make_optimizer

OUT_ATOL = 1e-6  # fixture README: network outputs, float32 port vs float32 nussl
PAPER_PARAMS = 26_719_656
BN_VALUES = {"weight": 1.25, "bias": -0.5, "running_mean": -45.0, "running_var": 300.0}


def torch_names(params):
    """{(module, leaf): nussl state_dict key} for a ChimeraNet parameter tree."""
    names = {
        ("normalization", "weight"): "layers.normalization.batch_norm.weight",
        ("normalization", "bias"): "layers.normalization.batch_norm.bias",
    }
    names.update(
        {
            ("recurrent_stack", k): f"layers.recurrent_stack.rnn.{k}"
            for k in params["recurrent_stack"]
        }
    )
    for head in ("embedding", "mask"):
        names[(head, "kernel")] = f"layers.{head}.linear.weight"
        names[(head, "bias")] = f"layers.{head}.linear.bias"
    return names


def variables_from_torch(tensors, layers):
    """Map nussl tensors (by state_dict key) onto the Flax tree, independently of the converter."""
    rnn = "layers.recurrent_stack.rnn."
    params = {
        "normalization": {
            k: tensors[f"layers.normalization.batch_norm.{k}"] for k in ("weight", "bias")
        },
        "recurrent_stack": {
            f"{kind}_l{layer}{rev}": tensors[f"{rnn}{kind}_l{layer}{rev}"]
            for layer in range(layers)
            for rev in ("", "_reverse")
            for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        },
    }
    for head in ("embedding", "mask"):
        params[head] = {
            "kernel": tensors[f"layers.{head}.linear.weight"].T,
            "bias": tensors[f"layers.{head}.linear.bias"],
        }
    stats = {
        "normalization": {
            k: tensors[f"layers.normalization.batch_norm.{k}"]
            for k in ("running_mean", "running_var")
        }
    }
    return {"params": params, "batch_stats": stats}


def regenerate_weights(manifest):
    """The fixture README's deterministic PCG64 recipe, key by key in state_dict order."""
    tensors = {}
    for key, info in sorted(manifest["tensors"].items(), key=lambda kv: kv[1]["index"]):
        rng = np.random.default_rng([manifest["config"]["seed"], info["index"]])
        shape = tuple(info["shape"])
        bn_leaf = key.split("batch_norm.")[-1]
        if "batch_norm" in key:
            value = np.full(shape, BN_VALUES[bn_leaf])
        elif "weight" in key:
            value = rng.standard_normal(shape) / np.sqrt(shape[1])
        else:
            value = rng.standard_normal(shape) * 0.1
        tensors[key] = value.astype(np.float32)
    return tensors


def check_manifest(tensors, manifest):
    for key, info in manifest["tensors"].items():
        value = tensors[key].astype(np.float64)
        np.testing.assert_allclose(value.sum(), info["sum"], rtol=1e-9, atol=1e-9 * value.size)
        np.testing.assert_allclose(np.square(value).sum(), info["sumsq"], rtol=1e-9)
        np.testing.assert_array_equal(tensors[key].ravel()[:4], np.float32(info["first4"]))


@pytest.fixture(scope="module")
def small(fixtures_dir):
    d = np.load(fixtures_dir / "chimera" / "chimera_small.npz")
    manifest = json.loads(
        (fixtures_dir / "chimera" / "chimera_small_weights_manifest.json").read_text()
    )
    tensors = {k[len("param/") :]: d[k] for k in d.files if k.startswith("param/")}
    return d, manifest, tensors


def drop_channel(x):
    return x[..., 0, :] if x.ndim == 5 else x[..., 0]


def test_weight_recipe_reproduces_small_fixture(small):
    _, manifest, tensors = small
    regenerated = regenerate_weights(manifest)
    check_manifest(regenerated, manifest)
    for key, value in regenerated.items():
        np.testing.assert_array_equal(value, tensors[key])


@pytest.mark.parametrize("layout", ["torch", "inference"])
def test_small_eval_forward(small, layout):
    d, _, tensors = small
    model = ChimeraNet(hidden=24, layers=2, dropout=0.3)
    variables = variables_from_torch(tensors, layers=2)
    if layout == "inference":  # W_hh stored transposed, as jaxsep.Separator runs the model
        variables = inference_layout(variables)
    out, inter = jax.jit(lambda v, x: model.apply(v, x, mutable=["intermediates"]))(
        variables, drop_channel(d["input_mix_magnitude"])
    )
    inter = {k: v[0] for k, v in inter["intermediates"].items()}
    # -80..0 dB values: float32 log10 rounding is ~1e-7 relative
    np.testing.assert_allclose(
        inter["log_spectrogram"], drop_channel(d["eval_log_spectrogram"]), rtol=1e-6, atol=1e-5
    )
    np.testing.assert_allclose(
        inter["normalized"], drop_channel(d["eval_normalization"]), rtol=1e-6, atol=1e-5
    )
    np.testing.assert_allclose(inter["blstm_output"], d["eval_recurrent_stack"], atol=OUT_ATOL)
    np.testing.assert_allclose(out["embedding"], drop_channel(d["eval_embedding"]), atol=OUT_ATOL)
    np.testing.assert_allclose(out["mask"], drop_channel(d["eval_mask"]), atol=OUT_ATOL)
    estimates = out["mask"] * drop_channel(d["input_mix_magnitude"])[..., None]
    np.testing.assert_allclose(estimates, drop_channel(d["eval_estimates"]), atol=OUT_ATOL)
    np.testing.assert_allclose(np.linalg.norm(out["embedding"], axis=-1), 1.0, rtol=1e-6)


def test_small_train_step_matches_nussl(small):
    """Train-mode forward (batch BN stats, running stats after), chimera loss, gradients and
    the parameters after AutoClip(p=10) + Adam(1e-3), all from the same start as nussl."""
    d, _, tensors = small
    model = ChimeraNet(hidden=24, layers=2, dropout=0.0)  # the fixture's train pass: dropout 0
    variables = variables_from_torch(tensors, layers=2)
    mix = drop_channel(d["train_input_mix_magnitude"])
    sources = drop_channel(d["train_source_magnitudes"])
    ibm, weights = drop_channel(d["train_ideal_binary_mask"]), drop_channel(d["train_weights"])
    np.testing.assert_array_equal(losses.ideal_binary_mask(sources), ibm)
    np.testing.assert_allclose(losses.magnitude_weights(mix), weights, rtol=1e-5, atol=1e-6)

    def loss_fn(params):
        out, state = model.apply(
            {"params": params, "batch_stats": variables["batch_stats"]},
            mix,
            train=True,
            mutable=["batch_stats"],
        )
        total, terms = losses.chimera_loss(out, mix, sources, ibm, weights)
        return total, (out, state, terms)

    (total, (out, state, terms)), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(
        variables["params"]
    )
    np.testing.assert_allclose(out["embedding"], drop_channel(d["train_embedding"]), atol=OUT_ATOL)
    np.testing.assert_allclose(out["mask"], drop_channel(d["train_mask"]), atol=OUT_ATOL)
    bn = state["batch_stats"]["normalization"]
    np.testing.assert_allclose(bn["running_mean"], d["train_bn_running_mean_after"], rtol=1e-6)
    np.testing.assert_allclose(bn["running_var"], d["train_bn_running_var_after"], rtol=1e-6)
    np.testing.assert_allclose(terms["dc"], d["train_loss_dc"], rtol=1e-5)
    np.testing.assert_allclose(terms["mi"], d["train_loss_l1"], rtol=1e-5)
    np.testing.assert_allclose(total, d["train_loss_total"], rtol=1e-5)

    norm = optax.tree.norm(grads)
    np.testing.assert_allclose(norm, d["grad_norm_before_clip_f64"], rtol=1e-5)
    tx = make_optimizer({"name": "adam", "lr": 1e-3, "autoclip_percentile": 10})

    @jax.jit
    def step(params, grads):
        updates, _ = tx.update(grads, tx.init(params), params)
        return optax.apply_updates(params, updates)

    after = step(variables["params"], grads)
    # nussl's grad/ arrays were read after clip_grad_norm_ (in place): history = this one norm,
    # so the reference scaled them by norm / (norm + 1e-6)
    clipped = jax.tree.map(lambda g: g * norm / (norm + 1e-6), grads)
    for (module, leaf), key in torch_names(grads).items():
        transpose = np.transpose if leaf == "kernel" else np.asarray
        ref = d[f"grad/{key}"]
        got = transpose(clipped[module][leaf])
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5 * np.abs(ref).max(), err_msg=key)
        got = transpose(after[module][leaf])
        np.testing.assert_allclose(got, d[f"after_adam/{key}"], atol=OUT_ATOL, err_msg=key)


def test_train_mode_dropout_and_batch_stats(small):
    d, _, tensors = small
    variables = variables_from_torch(tensors, layers=2)
    mix = drop_channel(d["train_input_mix_magnitude"])
    model = ChimeraNet(hidden=24, layers=2, dropout=0.3)
    eval_out = jax.jit(model.apply)(variables, mix)
    train = jax.jit(
        lambda key: model.apply(
            variables, mix, train=True, mutable=["batch_stats"], rngs={"dropout": key}
        )[0]["mask"]
    )
    run = lambda seed: train(jax.random.key(seed))  # noqa: E731
    a, b = run(0), run(1)
    assert not np.allclose(a, b)  # dropout between BLSTM layers is active in train mode
    assert not np.allclose(a, eval_out["mask"])
    np.testing.assert_array_equal(a, run(0))


def test_init_sizes_and_nussl_init():
    model = ChimeraNet()
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 3, 257)))
    count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes["params"]))
    assert count == PAPER_PARAMS
    assert shapes["params"]["embedding"]["kernel"].shape == (1000, 257 * 20)
    assert shapes["params"]["mask"]["kernel"].shape == (1000, 257 * 2)

    small = ChimeraNet(num_bins=9, hidden=16, layers=2, embedding_dim=4, num_sources=3)
    v = jax.jit(small.init)(jax.random.key(0), jnp.ones((1, 5, 9)))
    rnn = v["params"]["recurrent_stack"]
    for name in ("bias_ih_l0", "bias_hh_l1_reverse"):  # nussl init_forget: forget slice = 1
        np.testing.assert_array_equal(rnn[name], np.repeat([0.0, 1.0, 0.0, 0.0], 16))
    np.testing.assert_array_equal(v["batch_stats"]["normalization"]["running_var"], [1.0])
    out = jax.jit(small.apply)(v, jnp.ones((2, 5, 9)))
    assert out["embedding"].shape == (2, 5, 9, 4) and out["mask"].shape == (2, 5, 9, 3)


def test_bad_input_shape_is_one_line_error():
    model = ChimeraNet(num_bins=9, hidden=4, layers=1)
    with pytest.raises(JaxsepError, match=r"\[batch, frames, 9\]"):
        model.init(jax.random.key(0), jnp.ones((1, 5, 9, 1)))


def test_front_end_and_mask_separation(fixtures_dir):
    d = np.load(fixtures_dir / "chimera" / "stft_transforms.npz")
    mag = mixture_magnitude(jnp.asarray(d["audio_mix"])[None])[0]
    np.testing.assert_allclose(mag, d["mix_magnitude"][..., 0], atol=1e-6)

    model = ChimeraNet(num_bins=257, hidden=4, layers=1, embedding_dim=2, num_sources=2)
    v = jax.jit(model.init)(jax.random.key(0), jnp.ones((1, 3, 257)))
    # a mask head saturated at 1 must give back the mixture for every source
    v["params"]["mask"]["kernel"] = jnp.zeros_like(v["params"]["mask"]["kernel"])
    v["params"]["mask"]["bias"] = jnp.full_like(v["params"]["mask"]["bias"], 40.0)
    wave = jnp.asarray(d["audio_mix"])[None]
    separate = jax.jit(lambda v, w: separate_with_mask(model, v, w))
    out = separate(v, wave)
    assert out.shape == (1, 2, 16000)
    np.testing.assert_allclose(out[0, 0], d["audio_mix"], atol=1e-6)
    np.testing.assert_allclose(out[0, 1], d["audio_mix"], atol=1e-6)
    # a mask of 0.5 (bias 0) halves it
    v["params"]["mask"]["bias"] = jnp.zeros_like(v["params"]["mask"]["bias"])
    np.testing.assert_allclose(separate(v, wave)[0, 1], d["audio_mix"] / 2, atol=1e-6)


def test_paper_size_forward(fixtures_dir):
    folder = fixtures_dir / "chimera"
    d = np.load(folder / "chimera_paper.npz")
    manifest = json.loads((folder / "chimera_paper_weights_manifest.json").read_text())
    tensors = regenerate_weights(manifest)
    check_manifest(tensors, manifest)
    variables = variables_from_torch(tensors, layers=4)
    count = sum(x.size for x in jax.tree.leaves(variables["params"]))
    assert count == manifest["n_params"] == PAPER_PARAMS
    model = ChimeraNet(dropout=0.0)  # the fixture's train pass ran with dropout 0

    @jax.jit
    def forward(v, eval_x, train_x):
        eval_out, inter = model.apply(v, eval_x, mutable=["intermediates"])
        train_out, state = model.apply(v, train_x, train=True, mutable=["batch_stats"])
        return eval_out, inter["intermediates"]["blstm_output"][0], train_out, state

    eval_out, blstm, out, state = forward(
        variables,
        drop_channel(d["input_mix_magnitude"]),
        drop_channel(d["train_input_mix_magnitude"]),
    )
    np.testing.assert_allclose(blstm, d["eval_recurrent_stack"], atol=OUT_ATOL)
    np.testing.assert_allclose(
        eval_out["embedding"], drop_channel(d["eval_embedding"]), atol=OUT_ATOL
    )
    np.testing.assert_allclose(eval_out["mask"], drop_channel(d["eval_mask"]), atol=OUT_ATOL)
    np.testing.assert_allclose(out["embedding"], drop_channel(d["train_embedding"]), atol=OUT_ATOL)
    np.testing.assert_allclose(out["mask"], drop_channel(d["train_mask"]), atol=OUT_ATOL)
    bn = state["batch_stats"]["normalization"]
    np.testing.assert_allclose(bn["running_mean"], d["train_bn_running_mean_after"], rtol=1e-6)
    np.testing.assert_allclose(bn["running_var"], d["train_bn_running_var_after"], rtol=1e-6)

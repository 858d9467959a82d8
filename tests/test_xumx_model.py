"""X-UMX / UMX Flax port against the asteroid and open-unmix golden fixtures (eval mode)."""

import hashlib
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxsep.convert.umx import umx_variables_from_state_dicts
from jaxsep.convert.xumx import convert_xumx, xumx_variables_from_state_dict
from jaxsep.errors import JaxsepError
from jaxsep.models.xumx import XUMX, bandwidth_to_max_bin
from jaxsep.nn.batchnorm import TorchBatchNorm
from jaxsep.nn.lstm import inference_layout

XUMX_SOURCES = ["bass", "drums", "vocals", "other"]
UMX_TARGETS = ["vocals", "drums", "bass", "other"]


def assert_close(actual, expected, rel=1e-4, name=""):
    """max |actual - expected| <= rel * max |expected| (float32 parity, DESIGN §5)."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, (name, actual.shape, expected.shape)
    error = np.max(np.abs(actual - expected))
    scale = np.max(np.abs(expected))
    assert error <= rel * scale, f"{name}: max error {error:.3g} > {rel} * {scale:.3g}"


def regenerate_state_dict(folder):
    """Full-size state_dict: manifest rule for ndim >= 2 tensors (checked bit-exact), npz rest."""
    manifest = json.loads((folder / "full_weights_manifest.json").read_text())
    small = np.load(folder / "full_small_params.npz")
    state_dict = {key: small[key] for key in small.files}
    for entry in manifest["regenerated"]:
        shape = entry["shape"]
        rng = np.random.Generator(
            np.random.PCG64(np.random.SeedSequence([manifest["base_seed"], entry["index"]]))
        )
        u = rng.random(int(np.prod(shape)))
        bound = manifest["gain"] / np.sqrt(np.prod(shape[1:]))
        weight = ((2.0 * u - 1.0) * bound).astype(np.float32).reshape(shape)
        digest = hashlib.sha256(weight.astype("<f4").tobytes()).hexdigest()
        assert digest == entry["sha256_f32_le"], entry["key"]
        np.testing.assert_allclose(weight.sum(dtype=np.float64), entry["sum"], rtol=1e-9)
        state_dict[entry["key"]] = weight
    assert sorted(state_dict) == sorted(manifest["state_dict_key_order"])
    return {key: state_dict[key] for key in manifest["state_dict_key_order"]}


def run_with_intermediates(model, variables, x, method=None):
    fn = jax.jit(lambda v, x: model.apply(v, x, method=method, mutable=["intermediates"]))
    out, state = fn(variables, jnp.asarray(x))
    return np.asarray(out), {k: np.asarray(v[0]) for k, v in state["intermediates"].items()}


def check_xumx_against(io, model, variables):
    """Compare every stored asteroid intermediate (time-major, batch 1) with ours."""
    wave = io["input_wav"].transpose(0, 2, 1)  # [B, C, T] -> [B, T, C]
    out, inter = run_with_intermediates(model, variables, wave)
    # ours [B, S, frames, bins, C]; asteroid masked_spec/masks (S, T, B, C, F)
    to_ours = (2, 0, 1, 4, 3)
    assert_close(out, io["masked_spec"].transpose(to_ours), name="masked_spec")
    assert_close(inter["masks"], io["masks"].transpose(to_ours), name="masks")
    for name in ("enc_out", "lstm_out", "skip_concat"):  # (S, T, B, H) -> [B, S, T, H]
        assert_close(inter[name], io[name].transpose(2, 0, 1, 3), name=name)
    for name in ("cross_1", "cross_2"):  # (T, B, H) -> [B, T, H]
        assert_close(inter[name], io[name].transpose(1, 0, 2), name=name)


def test_bandwidth_to_max_bin():
    assert bandwidth_to_max_bin(44100, 4096, 16000) == 1487
    assert bandwidth_to_max_bin(44100, 512, 16000) == 186
    assert bandwidth_to_max_bin(44100, 4096, 22050) == 2049


@pytest.mark.parametrize("fuse_lstms", [True, False])
@pytest.mark.parametrize("layout", ["torch", "inference"])
def test_xumx_tiny_package_matches_asteroid(fixtures_dir, fuse_lstms, layout):
    # fuse_lstms=False runs each source's jaxsep.nn.LSTM module; True one scan for all sources.
    # layout "inference": W_hh stored transposed, as jaxsep.Separator runs the model.
    folder = fixtures_dir / "xumx"
    config, variables = convert_xumx(folder / "xumx_tiny_package.pth")
    assert config["model_kwargs"]["max_bin"] == 186 and config["model_kwargs"]["hop"] == 128
    model = XUMX(**config["model_kwargs"], fuse_lstms=fuse_lstms)
    if layout == "inference":
        variables = inference_layout(variables)
    check_xumx_against(np.load(folder / "tiny_io.npz"), model, variables)


def test_fused_lstms_refuse_mixed_recurrent_layouts(fixtures_dir):
    config, variables = convert_xumx(fixtures_dir / "xumx" / "xumx_tiny_package.pth")
    params = dict(variables["params"])
    params["vocals"] = inference_layout(params["vocals"])  # one source only
    model = XUMX(**config["model_kwargs"])
    with pytest.raises(JaxsepError, match="mixes W_hh layouts"):
        model.apply({**variables, "params": params}, jnp.zeros((1, 4096, 2)))


def test_xumx_full_size_matches_asteroid(fixtures_dir):
    folder = fixtures_dir / "xumx"
    kwargs, variables = xumx_variables_from_state_dict(regenerate_state_dict(folder))
    assert kwargs["sources"] == XUMX_SOURCES and kwargs["hop"] == 1024
    model = XUMX(**kwargs)
    assert model.n_fft == 4096 and model.max_bin == 1487 and model.hidden_size == 512
    check_xumx_against(np.load(folder / "full_io.npz"), model, variables)


def test_umx_tiny_four_targets_match_openunmix(fixtures_dir):
    folder = fixtures_dir / "umx"
    state_dicts = {
        t: torch.load(folder / "tiny_model" / f"{t}.pth", weights_only=True) for t in UMX_TARGETS
    }
    state_dicts = {t: {k: v.numpy() for k, v in sd.items()} for t, sd in state_dicts.items()}
    kwargs, variables = umx_variables_from_state_dicts(state_dicts)
    args = json.loads((folder / "tiny_model" / "separator.json").read_text())
    model = XUMX(**kwargs, hop=args["nhop"])
    assert not model.bridge and model.n_fft == args["nfft"]
    io = np.load(folder / "tiny_4targets_io.npz")
    expected = np.stack([io[f"spec_{t}"] for t in UMX_TARGETS], 1).transpose(0, 1, 4, 3, 2)
    # from the stored mixture magnitude (B, C, F, T) ...
    out, _ = run_with_intermediates(
        model, variables, io["mix_mag"].transpose(0, 3, 2, 1), method="from_magnitude"
    )
    assert_close(out, expected, name="from_magnitude")
    # ... and end to end from the waveform (our torch-mode STFT)
    wave = np.load(folder / "tiny_vocals_residual_io.npz")["input_wav"].transpose(0, 2, 1)
    out, _ = run_with_intermediates(model, variables, wave)
    assert_close(out, expected, name="from wave")


def test_umx_full_size_vocals_matches_openunmix(fixtures_dir):
    folder = fixtures_dir / "umx"
    kwargs, variables = umx_variables_from_state_dicts({"vocals": regenerate_state_dict(folder)})
    model = XUMX(**kwargs, hop=1024)
    assert (model.n_fft, model.max_bin, model.sources) == (4096, 1487, ["vocals"])
    io = np.load(folder / "full_io.npz")
    out, inter = run_with_intermediates(model, variables, io["input_wav"].transpose(0, 2, 1))
    assert_close(out[0, 0], io["spec_vocals"][0].transpose(2, 1, 0), name="spec_vocals")
    assert_close(inter["enc_out"][0, 0], np.tanh(io["bn1_out"]), name="tanh(bn1_out)")
    assert_close(inter["lstm_out"][0, 0], io["lstm_out"][:, 0], name="lstm_out")


def test_torch_batch_norm_matches_torch_in_train_and_eval():
    rng = np.random.default_rng(0)
    reference = torch.nn.BatchNorm1d(6)  # momentum 0.1, eps 1e-5
    with torch.no_grad():
        reference.weight.uniform_(0.5, 1.5)
        reference.bias.uniform_(-0.2, 0.2)
    norm = TorchBatchNorm()
    x0 = rng.normal(size=(3, 5, 6)).astype(np.float32)
    variables = norm.init(jax.random.key(0), x0)
    variables = {
        "params": {
            "weight": reference.weight.detach().numpy(),
            "bias": reference.bias.detach().numpy(),
        },
        "batch_stats": variables["batch_stats"],
    }
    for step in range(2):  # rows = all leading axes, like BatchNorm1d on (T*B, features)
        x = (rng.normal(size=(3, 5, 6)) * 2 + step).astype(np.float32)
        expected = reference(torch.from_numpy(x.reshape(-1, 6))).detach().numpy().reshape(x.shape)
        out, updates = norm.apply(variables, x, train=True, mutable=["batch_stats"])
        variables = {**variables, **updates}
        assert_close(out, expected, name=f"train output {step}")
    stats = variables["batch_stats"]
    assert_close(stats["running_mean"], reference.running_mean.numpy(), name="running_mean")
    assert_close(stats["running_var"], reference.running_var.numpy(), name="running_var")
    reference.eval()
    expected = reference(torch.from_numpy(x0.reshape(-1, 6))).detach().numpy().reshape(x0.shape)
    assert_close(norm.apply(variables, x0), expected, name="eval output")


def test_train_mode_updates_every_batch_norm_and_uses_dropout(fixtures_dir):
    # Converted variables rather than model.init: random init of the 3-layer BLSTMs compiles slowly.
    config, variables = convert_xumx(fixtures_dir / "xumx" / "xumx_tiny_package.pth")
    model = XUMX(**config["model_kwargs"])
    wave = 0.1 * jax.random.normal(jax.random.key(1), (2, 4096, 2))

    @jax.jit
    def train_apply(key):
        return model.apply(
            variables, wave, train=True, mutable=["batch_stats"], rngs={"dropout": key}
        )

    (out_a, updates), (out_b, _) = train_apply(jax.random.key(0)), train_apply(jax.random.key(1))
    assert out_a.shape == (2, 4, 33, 257, 2)
    assert not np.allclose(out_a, out_b)  # dropout between LSTM layers is active
    for source in XUMX_SOURCES:
        for bn in ("bn1", "bn2", "bn3"):
            for stat in ("running_mean", "running_var"):
                old = variables["batch_stats"][source][bn][stat]
                assert not np.allclose(updates["batch_stats"][source][bn][stat], old)

    # Gradients reach every source's LSTM through the fused scan (train mode, with dropout).
    def loss(params):
        out, _ = model.apply(
            {**variables, "params": params},
            wave,
            train=True,
            mutable=["batch_stats"],
            rngs={"dropout": jax.random.key(0)},
        )
        return jnp.mean(out)

    grads = jax.jit(jax.grad(loss))(variables["params"])
    for source in XUMX_SOURCES:
        for name in ("weight_hh_l0", "weight_ih_l2_reverse"):
            grad = np.asarray(grads[source]["lstm"][name])
            assert np.all(np.isfinite(grad)) and np.any(grad != 0), (source, name)
    eval_apply = jax.jit(model.apply)
    eval_out = eval_apply(variables, wave)
    np.testing.assert_array_equal(eval_out, eval_apply(variables, wave))
    assert not np.allclose(eval_out, out_a)  # eval uses the running statistics
    assert np.all(np.asarray(eval_out) >= 0)


@pytest.mark.parametrize(
    "kwargs, shape",
    [({}, (1, 4096, 1)), ({}, (4096, 2)), ({"max_bin": 5000}, (1, 4096, 2))],
)
def test_bad_inputs_raise_one_line_errors(kwargs, shape):
    model = XUMX(n_fft=512, hop=128, hidden_size=8, **kwargs)
    with pytest.raises(JaxsepError, match="XUMX"):
        model.init(jax.random.key(0), jnp.zeros(shape))

"""The models' `dtype="bfloat16"` option: every matmul and convolution really runs on bfloat16
operands, gradients and outputs stay float32, the result stays close to float32, a model trains
with it, and a bad dtype is a one-line error."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxsep.errors import JaxsepError
from jaxsep.models.chimera import ChimeraNet
from jaxsep.models.vqvae import VQVAE, VQVAEConfig
from jaxsep.models.xumx import XUMX
from jaxsep.nn.lstm import LSTM, recurrence, recurrence_autodiff
from jaxsep.nn.precision import compute_dtype


def _rel_l2(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _matmul_operand_dtypes(fn, *args) -> set:
    """Operand dtypes of every dot_general / convolution in fn's jaxpr (nested ones included)."""
    found = set()

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name in ("dot_general", "conv_general_dilated"):
                found.add(tuple(str(v.aval.dtype) for v in eqn.invars))
            for value in eqn.params.values():
                for inner in value if isinstance(value, (list, tuple)) else (value,):
                    inner = getattr(inner, "jaxpr", inner)  # a ClosedJaxpr's Jaxpr
                    if hasattr(inner, "eqns"):
                        walk(inner)

    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return found


def test_compute_dtype_names_and_rejects():
    assert compute_dtype("bfloat16") == jnp.bfloat16
    assert compute_dtype(jnp.float32) == jnp.float32
    for bad in ("float16", "bf16", 3):
        with pytest.raises(JaxsepError, match="dtype must be one of"):
            compute_dtype(bad, "XUMX")


@pytest.mark.parametrize("bad", ["float16", "int8"])
def test_models_reject_an_unsupported_dtype(bad):
    wave = jnp.zeros((1, 2048, 2))
    with pytest.raises(JaxsepError, match=f"XUMX: dtype must be one of .*{bad}"):
        XUMX(n_fft=256, hop=64, hidden_size=8, max_bin=50, dtype=bad).init(jax.random.key(0), wave)
    with pytest.raises(JaxsepError, match="ChimeraNet: dtype"):
        ChimeraNet(hidden=8, layers=1, dtype=bad).init(jax.random.key(0), jnp.ones((1, 5, 257)))
    with pytest.raises(JaxsepError, match="VQ-VAE config: dtype"):
        VQVAEConfig(dtype=bad)


def _lstm_problem(steps=12, batch=3, features=5, hidden=7):
    keys = jax.random.split(jax.random.key(0), 4)
    x = jax.random.normal(keys[0], (batch, steps, features))
    module = LSTM(hidden, num_layers=2, bidirectional=True, backend="scan")
    variables = module.init(keys[1], x)
    cotangent = jax.random.normal(keys[2], (batch, steps, 2 * hidden))
    return module, variables, x, cotangent


def test_lstm_bfloat16_runs_bf16_matmuls_with_float32_gradients():
    module, variables, x, ct = _lstm_problem()
    bf16 = module.clone(dtype="bfloat16")

    def loss(m, v, inputs):
        return jnp.sum(m.apply(v, inputs).astype(jnp.float32) * ct)

    grad = jax.grad(loss, argnums=(1, 2))
    assert _matmul_operand_dtypes(lambda v, i: grad(bf16, v, i), variables, x) == {
        ("bfloat16", "bfloat16")
    }
    assert _matmul_operand_dtypes(lambda v, i: grad(module, v, i), variables, x) == {
        ("float32", "float32")
    }
    assert bf16.apply(variables, x).dtype == jnp.bfloat16
    g16, g32 = grad(bf16, variables, x), grad(module, variables, x)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(g16))
    for a, b in zip(jax.tree.leaves(g16), jax.tree.leaves(g32)):
        assert _rel_l2(a, b) < 3e-2  # bfloat16 rounding (8-bit mantissa), not a different function


def test_lstm_bfloat16_custom_backward_matches_autodiff():
    """The hand-written backward pass applies the same bfloat16 policy as autodiff would."""
    keys = jax.random.split(jax.random.key(1), 4)
    steps, r, batch, hidden = 10, 2, 3, 6
    gates = jax.random.normal(keys[0], (steps, r, batch, 4 * hidden))
    w_hh = tuple(0.3 * jax.random.normal(k, (4 * hidden, hidden)) for k in keys[1:3])
    h0 = c0 = jnp.zeros((r, batch, hidden))
    ct = jax.random.normal(keys[3], (steps, r, batch, hidden))

    def loss(run, g, w):
        return jnp.sum(run(g, w, h0, c0, dtype=jnp.bfloat16)[0] * ct)

    custom = jax.grad(lambda g, w: loss(recurrence, g, w), argnums=(0, 1))(gates, w_hh)
    plain = jax.grad(lambda g, w: loss(recurrence_autodiff, g, w), argnums=(0, 1))(gates, w_hh)
    for a, b in zip(jax.tree.leaves(custom), jax.tree.leaves(plain)):
        assert _rel_l2(a, b) < 2e-2


def test_xumx_and_chimera_bfloat16_stay_close_to_float32():
    wave = 0.3 * jax.random.normal(jax.random.key(0), (2, 4096, 2))
    xumx = XUMX(n_fft=256, hop=64, hidden_size=16, max_bin=100, nb_layers=2)
    v = xumx.init(jax.random.key(1), wave)
    y32 = xumx.apply(v, wave)
    y16 = xumx.clone(dtype="bfloat16").apply(v, wave)
    assert y16.dtype == jnp.float32  # masked magnitudes: float32 for the loss and the Wiener filter
    assert 0 < _rel_l2(y16, y32) < 2e-2
    assert _matmul_operand_dtypes(lambda p: xumx.clone(dtype="bfloat16").apply(p, wave), v) == {
        ("bfloat16", "bfloat16")
    }

    mag = jnp.abs(jax.random.normal(jax.random.key(2), (2, 20, 257)))
    chimera = ChimeraNet(hidden=16, layers=2)
    v = chimera.init(jax.random.key(3), mag)
    out32, out16 = chimera.apply(v, mag), chimera.clone(dtype="bfloat16").apply(v, mag)
    for key in ("embedding", "mask"):
        assert out16[key].dtype == jnp.float32
        assert 0 < _rel_l2(out16[key], out32[key]) < 2e-2


def test_vqvae_bfloat16_convolutions_and_float32_boundary():
    config = VQVAEConfig(
        levels=1, downs_t=(2,), strides_t=(2,), multipliers=(1,), width=8, depth=2, l_bins=16,
        emb_width=8,
    )  # fmt: skip
    model32, model16 = VQVAE(config), VQVAE(dataclasses.replace(config, dtype="bfloat16"))
    wave = 0.3 * jax.random.normal(jax.random.key(0), (1, 256, 1))
    v = model32.init(jax.random.key(1), wave)
    latents32 = model32.apply(v, wave, method=VQVAE.encode)
    latents16 = model16.apply(v, wave, method=VQVAE.encode)
    assert latents16[0].dtype == jnp.float32  # the quantiser's nearest-code search is float32
    assert 0 < _rel_l2(latents16[0], latents32[0]) < 2e-2
    recon16 = model16.apply(v, latents32, method=VQVAE.decode)[0]
    assert recon16.dtype == jnp.float32
    assert _rel_l2(recon16, model32.apply(v, latents32, method=VQVAE.decode)[0]) < 2e-2
    dtypes = _matmul_operand_dtypes(lambda p: model16.apply(p, wave, method=VQVAE.encode), v)
    assert dtypes == {("bfloat16", "bfloat16")}


def test_chimera_trains_in_bfloat16_like_in_float32():
    """The accuracy that matters: the loss curve of a short training run."""
    rng = np.random.default_rng(0)
    mag = jnp.asarray(np.abs(rng.standard_normal((4, 16, 257))).astype(np.float32))
    loud = mag > 1.0  # a learnable target: which of two "sources" dominates each bin
    target = jnp.stack([loud, ~loud], axis=-1).astype(jnp.float32)
    module = ChimeraNet(hidden=16, layers=1, dropout=0.0, lstm_backend="scan")
    variables = module.init(jax.random.key(0), mag)
    tx = optax.adam(1e-2)

    def run(dtype):
        net = module.clone(dtype=dtype)

        def loss(params, stats):
            out, new = net.apply(
                {"params": params, **stats}, mag, train=True, mutable=["batch_stats"]
            )
            return jnp.mean((out["mask"] - target) ** 2), new

        @jax.jit
        def step(params, stats, opt):
            (value, new), grads = jax.value_and_grad(loss, has_aux=True)(params, stats)
            updates, opt = tx.update(grads, opt, params)
            return optax.apply_updates(params, updates), new, opt, value

        params = variables["params"]
        stats = {"batch_stats": variables["batch_stats"]}
        opt, losses = tx.init(params), []
        for _ in range(30):
            params, stats, opt, value = step(params, stats, opt)
            losses.append(float(value))
        return np.array(losses)

    l32, l16 = run("float32"), run("bfloat16")
    assert l16[-1] < 0.8 * l16[0]  # it learns
    assert np.max(np.abs(l16 - l32) / l32) < 2e-2  # along the float32 curve


def test_recipes_pass_the_dtype_switch_to_their_models():
    from jaxsep.recipes import jukebox_unmix, xumx_vggish

    config = xumx_vggish.config_for("baseline", "tiny")
    assert xumx_vggish.model_kwargs(config, 44100, 2)["dtype"] == "float32"
    config.model.dtype = "bfloat16"
    assert XUMX(**xumx_vggish.model_kwargs(config, 44100, 2)).dtype == "bfloat16"
    config = jukebox_unmix.default_config()
    config.model.dtype = "bfloat16"
    assert jukebox_unmix._model_config(config).dtype == "bfloat16"
    config.model.dtype = "half"
    with pytest.raises(JaxsepError, match="dtype must be one of"):
        jukebox_unmix._model_config(config)

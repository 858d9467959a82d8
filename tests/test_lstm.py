"""jaxsep.nn.LSTM against torch.nn.LSTM: parameters, outputs, final states and gradients."""

import math

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from jax.experimental import rnn

from jaxsep.errors import JaxsepError
from jaxsep.nn.lstm import (
    LSTM,
    forget_gate_bias_init,
    inference_layout,
    pack_cudnn_weights,
    param_names,
)

FEATURES, HIDDEN, STEPS = 5, 4, 7


def _rel_err(actual, expected) -> float:
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


def _torch_lstm(num_layers: int, bidirectional: bool, seed: int = 0) -> torch.nn.LSTM:
    torch.manual_seed(seed)
    return torch.nn.LSTM(
        FEATURES, HIDDEN, num_layers=num_layers, bidirectional=bidirectional, batch_first=True
    )


def _params_from_torch(lstm: torch.nn.LSTM) -> dict:
    return {"params": {k: jnp.asarray(v.detach().numpy()) for k, v in lstm.state_dict().items()}}


def _loss_weights(shapes, seed: int = 1):
    """Random cotangents so that every output element contributes its own gradient."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(np.float32) for s in shapes]


@pytest.mark.parametrize(
    "bidirectional,num_layers,batch",
    [(False, 1, 1), (True, 1, 3), (False, 2, 3), (True, 2, 1), (True, 3, 3)],
)
def test_matches_torch_outputs_and_gradients(bidirectional, num_layers, batch):
    torch_lstm = _torch_lstm(num_layers, bidirectional)
    x = np.random.default_rng(batch).standard_normal((batch, STEPS, FEATURES)).astype(np.float32)
    directions = 2 if bidirectional else 1
    state_shape = (num_layers * directions, batch, HIDDEN)
    w_y, w_h, w_c = _loss_weights([(batch, STEPS, directions * HIDDEN), state_shape, state_shape])

    x_torch = torch.from_numpy(x).requires_grad_(True)
    y_t, (h_t, c_t) = torch_lstm(x_torch)
    loss_t = (
        (y_t * torch.from_numpy(w_y)).sum()
        + (h_t * torch.from_numpy(w_h)).sum()
        + (c_t * torch.from_numpy(w_c)).sum()
    )
    loss_t.backward()

    module = LSTM(HIDDEN, num_layers=num_layers, bidirectional=bidirectional, backend="scan")
    variables = _params_from_torch(torch_lstm)

    def loss(params, inputs):
        y, (h, c) = module.apply({"params": params}, inputs, return_state=True)
        return jnp.sum(y * w_y) + jnp.sum(h * w_h) + jnp.sum(c * w_c), (y, h, c)

    grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))
    (_, (y, h, c)), (d_params, d_x) = grad(variables["params"], jnp.asarray(x))
    for ours, theirs in ((y, y_t), (h, h_t), (c, c_t)):
        assert ours.shape == tuple(theirs.shape)
        np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=1e-5, atol=1e-6)
    assert _rel_err(d_x, x_torch.grad.numpy()) < 1e-4
    torch_grads = {name: p.grad.numpy() for name, p in torch_lstm.named_parameters()}
    assert set(torch_grads) == set(d_params)
    for name, grad in torch_grads.items():
        assert _rel_err(d_params[name], grad) < 1e-4, name


@pytest.mark.parametrize("bidirectional", [False, True])
def test_parameters_named_shaped_and_initialised_like_torch(bidirectional):
    num_layers, features, hidden = 3, 6, 8
    torch_lstm = torch.nn.LSTM(features, hidden, num_layers, bidirectional=bidirectional)
    module = LSTM(hidden, num_layers=num_layers, bidirectional=bidirectional, backend="scan")
    params = jax.jit(module.init)(jax.random.key(0), jnp.zeros((2, 3, features)))["params"]
    expected = {k: tuple(v.shape) for k, v in torch_lstm.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in params.items()} == expected
    bound = 1 / math.sqrt(hidden)
    values = np.concatenate([np.ravel(v) for v in params.values()])
    assert np.abs(values).max() <= bound
    # U(-k, k) has std k / sqrt(3); a wrong init (zeros, normal, other scale) misses this.
    assert abs(values.std() - bound / math.sqrt(3)) < 0.05 * bound
    assert len({float(np.ravel(v)[0]) for v in params.values()}) == len(params)


def test_custom_vjp_equals_autodiff_of_the_same_scan():
    x = jax.random.normal(jax.random.key(1), (3, 11, 6))
    fast = LSTM(16, num_layers=2, bidirectional=True, backend="scan")
    slow = fast.clone(custom_vjp=False)
    variables = fast.init(jax.random.key(2), x)
    h0 = jax.random.normal(jax.random.key(3), (4, 3, 16))
    c0 = jax.random.normal(jax.random.key(4), (4, 3, 16))
    w_y = jax.random.normal(jax.random.key(5), (3, 11, 32))

    def loss(module, params, inputs, h0, c0):
        y, (h, c) = module.apply(params, inputs, (h0, c0), return_state=True)
        return jnp.sum(y * w_y) + jnp.sum(h * h) + jnp.sum(jnp.sin(c))

    grad = jax.jit(jax.grad(loss, argnums=(1, 2, 3, 4)), static_argnums=0)
    got = grad(fast, variables, x, h0, c0)
    want = grad(slow, variables, x, h0, c0)
    got_leaves, want_leaves = jax.tree.leaves(got), jax.tree.leaves(want)
    assert len(got_leaves) == 4 * 2 * 2 + 3
    for a, b in zip(got_leaves, want_leaves):
        assert _rel_err(a, b) < 1e-5


def test_jit_and_time_major_input():
    torch_lstm = _torch_lstm(2, True)
    variables = _params_from_torch(torch_lstm)
    x = np.random.default_rng(0).standard_normal((2, STEPS, FEATURES)).astype(np.float32)
    expected = torch_lstm(torch.from_numpy(x))[0].detach().numpy()
    batch_major = LSTM(HIDDEN, num_layers=2, bidirectional=True)
    time_major = batch_major.clone(batch_first=False)
    y = jax.jit(batch_major.apply)(variables, x)
    y_tm = jax.jit(time_major.apply)(variables, x.swapaxes(0, 1))
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(y_tm.swapaxes(0, 1), expected, rtol=1e-5, atol=1e-6)


def test_dropout_only_between_layers_and_only_in_training():
    x = jax.random.normal(jax.random.key(0), (2, 9, 5))
    module = LSTM(8, num_layers=2, bidirectional=True, dropout=0.5)
    variables = jax.jit(module.init)(jax.random.key(1), x)
    plain = jax.jit(module.clone(dropout=0.0).apply)(variables, x)
    np.testing.assert_array_equal(jax.jit(module.apply)(variables, x), plain)

    @jax.jit
    def train(rng_seed):
        rngs = {"dropout": jax.random.key(rng_seed)}
        return module.apply(variables, x, train=True, rngs=rngs)

    assert not np.allclose(train(2), plain, atol=1e-3)
    assert not np.allclose(train(2), train(3), atol=1e-3)
    np.testing.assert_array_equal(train(2), train(2))
    # The first layer's own output is never dropped: a 1-layer LSTM ignores dropout.
    single = LSTM(8, num_layers=1, dropout=0.5)
    single_vars = jax.jit(single.init)(jax.random.key(1), x)
    apply = jax.jit(single.apply, static_argnames="train")
    np.testing.assert_array_equal(
        apply(single_vars, x, train=True, rngs={"dropout": jax.random.key(2)}),
        apply(single_vars, x),
    )


def test_forget_gate_bias_init():
    module = LSTM(3, bias_init=forget_gate_bias_init(1.0))
    bias = module.init(jax.random.key(0), jnp.zeros((1, 2, 4)))["params"]["bias_hh_l0"]
    np.testing.assert_array_equal(bias, [0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0])


@pytest.mark.parametrize("bidirectional", [False, True])
def test_cudnn_weight_packing_matches_jax_reference(bidirectional):
    """The flat cuDNN vector, unpacked by jax's own code and run by `lstm_ref`, equals scan."""
    num_layers, batch = 2, 2
    module = LSTM(HIDDEN, num_layers=num_layers, bidirectional=bidirectional, backend="scan")
    x = jax.random.normal(jax.random.key(0), (batch, STEPS, FEATURES))
    params = jax.jit(module.init)(jax.random.key(1), x)["params"]
    directions = (False, True) if bidirectional else (False,)
    layers = [
        [tuple(params[n] for n in param_names(k, rev)) for rev in directions]
        for k in range(num_layers)
    ]
    flat = pack_cudnn_weights(layers)
    assert flat.size == rnn.get_num_params_in_lstm(FEATURES, HIDDEN, num_layers, bidirectional)
    unpacked = rnn.unpack_lstm_weights(flat, FEATURES, HIDDEN, num_layers, bidirectional)
    zeros = jnp.zeros((num_layers * len(directions), batch, HIDDEN))
    seq_lengths = jnp.full((batch,), STEPS, jnp.int32)
    y_ref, h_ref, c_ref = rnn.lstm_ref(  # already jitted by jax
        x, zeros, zeros, *unpacked, seq_lengths, FEATURES, HIDDEN, num_layers, 0.0, bidirectional
    )
    y, (h, c) = jax.jit(module.apply, static_argnames="return_state")(
        {"params": params}, x, return_state=True
    )
    for ours, ref in ((y, y_ref), (h, h_ref), (c, c_ref)):
        np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bidirectional,num_layers", [(False, 1), (True, 3)])
def test_inference_layout_gives_the_same_outputs_and_gradients(bidirectional, num_layers):
    torch_lstm = _torch_lstm(num_layers, bidirectional)
    variables = _params_from_torch(torch_lstm)
    x = np.random.default_rng(2).standard_normal((3, STEPS, FEATURES)).astype(np.float32)
    y_t, (h_t, c_t) = torch_lstm(torch.from_numpy(x))
    module = LSTM(HIDDEN, num_layers=num_layers, bidirectional=bidirectional, backend="scan")

    prepared = inference_layout(variables)
    params = prepared["params"]
    for name, weight in variables["params"].items():
        if name.startswith("weight_hh"):
            assert name not in params  # renamed, so the layout is never mistaken for torch's
            np.testing.assert_array_equal(params[name.replace("hh", "hh_t")], weight.T)
        else:
            assert params[name] is weight  # everything else untouched
    assert inference_layout(prepared) == prepared  # idempotent

    y, (h, c) = module.apply(prepared, jnp.asarray(x), return_state=True)
    for ours, ref in ((y, y_t), (h, h_t), (c, c_t)):
        assert _rel_err(ours, ref.detach().numpy()) < 1e-5
    # the transposed layout differentiates too (plain autodiff): same gradients, transposed
    w_y = _loss_weights([y.shape])[0]

    def loss(v):
        return jnp.sum(module.apply(v, jnp.asarray(x)) * w_y)

    g_torch_layout, g_prepared = jax.grad(loss)(variables), jax.grad(loss)(prepared)
    assert (
        _rel_err(
            inference_layout(g_torch_layout)["params"]["weight_hh_t_l0"],
            g_prepared["params"]["weight_hh_t_l0"],
        )
        < 1e-5
    )
    assert (
        _rel_err(g_torch_layout["params"]["weight_ih_l0"], g_prepared["params"]["weight_ih_l0"])
        < 1e-5
    )

    # [4H, H] stored under the transposed name: flax's shape check names the parameter
    wrong = {"params": dict(params, weight_hh_t_l0=params["weight_hh_t_l0"].T)}
    with pytest.raises(flax.errors.ScopeParamShapeError, match="weight_hh_t_l0"):
        module.apply(wrong, jnp.asarray(x))


def test_bad_input_and_cudnn_on_cpu_raise_one_line_errors():
    x = jnp.zeros((1, 3, 2))
    if jax.default_backend() == "cpu":  # (on a GPU, test_cudnn_backend_equals_scan_backend)
        with pytest.raises(JaxsepError, match="needs a GPU"):
            LSTM(4, backend="cudnn").init(jax.random.key(0), x)
    with pytest.raises(JaxsepError, match="unknown backend"):
        LSTM(4, backend="cuda").init(jax.random.key(0), x)
    with pytest.raises(JaxsepError, match="3-D"):
        LSTM(4).init(jax.random.key(0), jnp.zeros((3, 2)))
    with pytest.raises(JaxsepError, match="dropout"):
        LSTM(4, dropout=1.0).init(jax.random.key(0), x)
    with pytest.raises(JaxsepError, match="initial_state"):
        LSTM(4).init(jax.random.key(0), x, (jnp.zeros((1, 1, 3)), jnp.zeros((1, 1, 3))))


@pytest.mark.gpu
@pytest.mark.skipif(jax.default_backend() != "gpu", reason="cuDNN LSTM needs a GPU")
@pytest.mark.parametrize("bidirectional", [False, True])
def test_cudnn_backend_equals_scan_backend(bidirectional):
    x = jax.random.normal(jax.random.key(0), (3, 33, 24))
    scan = LSTM(
        32,
        num_layers=3,
        bidirectional=bidirectional,
        backend="scan",
        precision=jax.lax.Precision.HIGHEST,
    )
    cudnn = scan.clone(backend="cudnn")
    variables = scan.init(jax.random.key(1), x)
    w_y = jax.random.normal(jax.random.key(2), (3, 33, 32 * (2 if bidirectional else 1)))

    def loss(module, params, inputs):
        y, (h, c) = module.apply(params, inputs, return_state=True)
        return jnp.sum(y * w_y) + jnp.sum(h) + jnp.sum(c), (y, h, c)

    grad = jax.jit(jax.grad(loss, argnums=(1, 2), has_aux=True), static_argnums=0)
    (g_scan, (y_s, h_s, c_s)), (g_cudnn, (y_c, h_c, c_c)) = (
        grad(scan, variables, x),
        grad(cudnn, variables, x),
    )
    for ours, ref in ((y_c, y_s), (h_c, h_s), (c_c, c_s)):
        np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(jax.tree.leaves(g_cudnn), jax.tree.leaves(g_scan)):
        assert _rel_err(a, b) < 1e-4
    # weights in the inference layout go back to torch's for cuDNN
    y_p = cudnn.apply(inference_layout(variables), x)
    np.testing.assert_allclose(y_p, y_s, rtol=1e-5, atol=1e-5)
    # Dropout in training runs layer by layer through cuDNN and must still be differentiable.
    dropped = cudnn.clone(dropout=0.4).apply(
        variables, x, train=True, rngs={"dropout": jax.random.key(3)}
    )
    assert dropped.shape == y_c.shape and not np.allclose(dropped, y_c, atol=1e-3)

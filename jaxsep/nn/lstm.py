"""(B)LSTM in PyTorch weight layout, with a fast scan backend and a cuDNN backend.

Parameters are named and shaped exactly like `torch.nn.LSTM.state_dict()`
(`weight_ih_l{k}[_reverse]` (4H, in), `weight_hh_l{k}[_reverse]` (4H, H), `bias_ih_l{k}[_reverse]`,
`bias_hh_l{k}[_reverse]`, gate order i, f, g, o), so checkpoint converters map one to one and both
backends share the same parameters. Weights used for many calls without a gradient may be put
in `inference_layout` (W_hh stored transposed, in memory only; checkpoints keep torch's names).

Why a hand-written scan: autodiff through `lax.scan` accumulates dW_hh one rank-B update per step,
which made flax's stock RNN 6.8x slower than torch in fwd+bwd on CPU. Here the input projection of
all timesteps and both directions is one einsum outside the loop, both directions run in ONE scan
(half the sequential steps), and a `jax.custom_vjp` makes the reverse scan emit only d(gates), so
dW_hh (and, through autodiff of the hoisted einsum, dW_ih) are single large matmuls.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from jaxsep.errors import JaxsepError
from jaxsep.nn.precision import compute_dtype, mixed_einsum

Array = jax.Array
Initializer = Callable[[Any, Sequence[int], Any], Array]
BACKENDS = ("auto", "scan", "cudnn")


def torch_uniform_init(hidden_size: int) -> Initializer:
    """torch.nn.LSTM's default init: every weight and bias ~ U(-1/sqrt(H), 1/sqrt(H))."""
    bound = 1.0 / math.sqrt(hidden_size)

    def init(key: Any, shape: Sequence[int], dtype: Any = jnp.float32) -> Array:
        return jax.random.uniform(key, shape, dtype, minval=-bound, maxval=bound)

    return init


def forget_gate_bias_init(value: float) -> Initializer:
    """Zero bias except the forget-gate slice [H:2H] (nussl's `init_forget=True` sets 1.0)."""

    def init(key: Any, shape: Sequence[int], dtype: Any = jnp.float32) -> Array:
        del key
        hidden = shape[-1] // 4
        return jnp.zeros(shape, dtype).at[..., hidden : 2 * hidden].set(value)

    return init


def param_names(layer: int, reverse: bool) -> tuple[str, str, str, str]:
    """torch state_dict names (W_ih, W_hh, b_ih, b_hh) of one layer and direction."""
    suffix = f"_l{layer}" + ("_reverse" if reverse else "")
    return tuple(f"{kind}{suffix}" for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))


# --------------------------------------------------------------------------------------------
# Inference layout. The forward recurrence multiplies by W_hh^T [H, 4H] (XLA:CPU's per-step dot
# on torch's [4H, H] layout ran 2-7x slower than on a transposed copy), so every call transposes
# each W_hh, and XLA:CPU transposes at 3-9 GB/s: 3.0 ms per X-UMX layer (8 x [1024, 256]) on
# one thread, where stacking already-transposed matrices takes 0.25 ms (`jnp`, this CPU). A
# model whose weights do not change between calls (separation, evaluation) transposes them
# once: `inference_layout` stores each `weight_hh_l{k}[_reverse]` as
# `weight_hh_t_l{k}[_reverse]` [H, 4H], and every LSTM path here reads whichever it finds.
# Training keeps torch's layout (the fast custom backward contracts [4H, H] in place); the
# transposed layout still differentiates, through plain autodiff of the scan.

_RECURRENT = re.compile(r"weight_hh(_l\d+(?:_reverse)?)")


def transposed_name(name: str) -> str:
    """`weight_hh_l1_reverse` -> `weight_hh_t_l1_reverse`, the inference-layout name."""
    return _RECURRENT.fullmatch(name).expand(r"weight_hh_t\1")


def inference_layout(tree: Any) -> Any:
    """`tree` (a model's variables, any nesting) with every LSTM's `weight_hh_*` [4H, H] replaced
    by `weight_hh_t_*` = its transpose [H, 4H]; everything else is returned as it is. Apply it
    once to weights used for many calls (`jaxsep.separate.Separator` does); idempotent."""
    if not isinstance(tree, Mapping):
        return tree
    out = {}
    for key, value in tree.items():
        if isinstance(key, str) and _RECURRENT.fullmatch(key) and not isinstance(value, Mapping):
            out[transposed_name(key)] = jnp.swapaxes(jnp.asarray(value), -1, -2)
        else:
            out[key] = inference_layout(value)
    return out


def recurrent_weight(params: Mapping[str, Array], name: str) -> tuple[Array, bool]:
    """The W_hh called `name` (torch's name) from an LSTM's params in either layout, and whether
    it came transposed ([H, 4H], `inference_layout`)."""
    if name in params:
        return params[name], False
    return params[transposed_name(name)], True


# --------------------------------------------------------------------------------------------
# The recurrence: gates_x [T, R, B, 4H] (input projection + both biases, already time-reversed
# for a reverse direction), W_hh as R torch-layout [4H, H] arrays, h0/c0 [R, B, H]
# -> hs [T, R, B, H], (h_T, c_T).
#
# Why the weights stay R separate torch-layout arrays: XLA:CPU moves memory slowly in concat /
# transpose fusions (~2-4 GB/s here), and stacking them (forward), restacking (backward) and
# unstacking the stacked dW_hh copied every recurrent weight three times per training step. Now
# the forward makes one transposed stack W_hh^T [R, H, 4H] for its batched per-step dot (one
# batched dot beat R small ones), the backward contracts each [4H, H] weight in place, and each
# dW_hh comes out on its own. X-UMX at batch 2 x 1 s, one thread, with `input_gates`: train step
# 421 -> 358 ms, inference 159 -> 128 ms (`tools/profile_step.py xumx train`).


def _rows(x: Array) -> Array:
    """[T, B, F] -> [T*B, F]: a 2-D operand, so that XLA contracts T*B as one dimension rather
    than transposing both operands to its own (B, T) order first (a copy of each per dot)."""
    return x.reshape(-1, x.shape[-1])


def _cell(z: Array, c: Array) -> tuple[Array, Array, Array]:
    """Torch LSTM cell from pre-activations z [.., 4H]: returns (h, c, activations i|f|g|o)."""
    i, f, g, o = jnp.split(z, 4, axis=-1)
    i, f, g, o = jax.nn.sigmoid(i), jax.nn.sigmoid(f), jnp.tanh(g), jax.nn.sigmoid(o)
    c = f * c + i * g
    h = o * jnp.tanh(c)
    return h, c, jnp.concatenate([i, f, g, o], axis=-1)


def _stacked_transpose(w_hh, dtype: Any = jnp.float32, transposed: bool = False) -> Array:
    """[R] x [4H, H] -> W_hh^T [R, H, 4H] in `dtype`: a contiguous stack, then one batched
    transpose (XLA:CPU fuses per-matrix transposes into the stack as a slow strided copy: 5.0 vs
    2.8 ms for 8 x [1024, 256], one thread). `transposed`: `w_hh` is already [R] x [H, 4H]
    (`inference_layout`), only stacked."""
    if transposed:
        return jnp.stack(list(w_hh)).astype(dtype)
    return jnp.stack(list(w_hh)).transpose(0, 2, 1).astype(dtype)


def _recurrent_matmul(h: Array, w_hh_t: Array, precision: Any, dtype: Any) -> Array:
    """h [R, B, H] @ W_hh^T [R, H, 4H] -> [R, B, 4H] float32 (operands in `dtype`). The
    weights are transposed once outside the loop (measured ~20% faster per step on XLA:CPU than
    contracting torch's [4H, H] layout inside the scan)."""
    return mixed_einsum("rbh,rhg->rbg", h, w_hh_t, dtype, precision)


def recurrence_autodiff(
    gates_x: Array,
    w_hh: Array | Sequence[Array],
    h0: Array,
    c0: Array,
    precision: Any = None,
    unroll: int = 1,
    dtype: Any = jnp.float32,
    transposed: bool = False,
) -> tuple[Array, tuple[Array, Array]]:
    """The LSTM recurrence as a plain `lax.scan`; JAX autodiff gives its gradient (reference).
    `dtype`: the recurrent matmul's operand dtype (`jaxsep.nn.precision`); gates, h and c stay
    float32. `transposed`: `w_hh` in the inference layout, [H, 4H] each."""

    w_hh_t = _stacked_transpose(w_hh, dtype, transposed)  # a stacked [R, 4H, H] iterates the same

    def step(carry: tuple[Array, Array], gx: Array) -> tuple[tuple[Array, Array], Array]:
        h, c = carry
        h, c, _ = _cell(gx + _recurrent_matmul(h, w_hh_t, precision, dtype), c)
        return (h, c), h

    (h, c), hs = lax.scan(step, (h0, c0), gates_x, unroll=unroll)
    return hs, (h, c)


def recurrence(
    gates_x: Array,
    w_hh: Array | Sequence[Array],
    h0: Array,
    c0: Array,
    precision: Any = None,
    unroll: int = 1,
    dtype: Any = jnp.float32,
    transposed: bool = False,
) -> tuple[Array, tuple[Array, Array]]:
    """Same as `recurrence_autodiff`, with a backward pass that emits d(gates) per step only,
    so each dW_hh is one [4H, T*B] x [T*B, H] matmul. `w_hh`: R arrays [4H, H] (or [R, 4H, H]).
    With `transposed` weights (`inference_layout`, for calls without a gradient) it is
    `recurrence_autodiff`: the custom backward is written for torch's layout."""
    if transposed:
        return recurrence_autodiff(gates_x, w_hh, h0, c0, precision, unroll, dtype, True)
    return _recurrence(gates_x, tuple(w_hh), h0, c0, precision, unroll, jnp.dtype(dtype))


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def _recurrence(gates_x, w_hh, h0, c0, precision, unroll, dtype):
    return recurrence_autodiff(gates_x, w_hh, h0, c0, precision, unroll, dtype)


def _recurrence_fwd(gates_x, w_hh, h0, c0, precision, unroll, dtype):
    w_hh_t = _stacked_transpose(w_hh, dtype)

    def step(carry, gx):
        h, c = carry
        h, c, acts = _cell(gx + _recurrent_matmul(h, w_hh_t, precision, dtype), c)
        return (h, c), (h, c, acts)

    (h, c), (hs, cs, acts) = lax.scan(step, (h0, c0), gates_x, unroll=unroll)
    return (hs, (h, c)), (hs, cs, acts, h0, c0, w_hh)


def _recurrence_bwd(precision, unroll, dtype, residuals, cotangents):
    hs, cs, acts, h0, c0, w_hh = residuals
    d_hs, (d_h_last, d_c_last) = cotangents
    c_prev = jnp.concatenate([c0[None], cs[:-1]], axis=0)
    w_cast = [w.astype(dtype) for w in w_hh]  # once, outside the loop (no-op in float32)

    def step(carry, xs):
        dh_next, dc_next = carry
        dh_out, act, c, cp = xs
        i, f, g, o = jnp.split(act, 4, axis=-1)
        tanh_c = jnp.tanh(c)
        dh = dh_out + dh_next
        dc = dc_next + dh * o * (1.0 - tanh_c * tanh_c)
        dz = jnp.concatenate(
            [
                dc * g * i * (1.0 - i),
                dc * cp * f * (1.0 - f),
                dc * i * (1.0 - g * g),
                dh * tanh_c * o * (1.0 - o),
            ],
            axis=-1,
        )
        dh_prev = jnp.stack(
            [mixed_einsum("bg,gh->bh", dz[r], w, dtype, precision) for r, w in enumerate(w_cast)]
        )
        return (dh_prev, dc * f), dz

    (d_h0, d_c0), d_gates = lax.scan(
        step, (d_h_last, d_c_last), (d_hs, acts, cs, c_prev), reverse=True, unroll=unroll
    )
    h_prev = jnp.concatenate([h0[None], hs[:-1]], axis=0)
    # The whole point of the custom VJP: each dW_hh is one [4H, T*B] x [T*B, H] matmul.
    d_w_hh = tuple(
        mixed_einsum("mg,mh->gh", _rows(d_gates[:, r]), _rows(h_prev[:, r]), dtype, precision)
        for r in range(len(w_hh))
    )
    return d_gates, d_w_hh, d_h0, d_c0


_recurrence.defvjp(_recurrence_fwd, _recurrence_bwd)


def input_gates(
    inputs: Sequence[Array],
    w_ih: Sequence[Array],
    biases: Sequence[Array],
    reverse: Sequence[bool],
    precision: Any = None,
    dtype: Any = jnp.float32,
) -> Array:
    """Input projections of R recurrences, stacked time-major: ``gates_x [T, R, B, 4H]``
    (float32; the matmul operands in `dtype`).

    ``inputs[r]`` is ``[T, B, F_r]``, ``w_ih[r]`` torch's ``[4H, F_r]``, ``biases[r]`` ``[4H]``;
    a reverse recurrence's gates are flipped in time. Each projection is ``x @ W^T`` on the
    torch-layout weight in place, so the gates come out time-major and the stack only copies
    contiguous ``[B, 4H]`` rows. Stacking the R weight matrices instead copies every weight per
    call (XLA:CPU: a 16 MB concat fusion per X-UMX layer took as long as the projection);
    projecting ``W @ x^T`` needs a transposed copy of the input and of the gates (ChimeraNet
    layer, batch 8 x 126 frames: 11 ms of its 155 ms forward), and its input gradient
    ``W^T @ dg`` ran at 43 GFLOP/s at X-UMX's size (``dg @ W``: 101).
    """
    gates = []
    for x, w, b, rev in zip(inputs, w_ih, biases, reverse, strict=True):
        g = mixed_einsum("mf,gf->mg", _rows(x), w, dtype, precision).reshape(*x.shape[:2], -1) + b
        gates.append(g[::-1] if rev else g)
    return jnp.stack(gates, axis=1)


def lstm_layer_scan(
    x: Array,
    w_ih: Array,
    w_hh: Array,
    bias: Array,
    h0: Array,
    c0: Array,
    *,
    custom_vjp: bool = True,
    precision: Any = None,
    unroll: int = 1,
    dtype: Any = jnp.float32,
    hh_transposed: bool = False,
) -> tuple[Array, Array, Array]:
    """One (bi)directional LSTM layer, time-major.

    x [T, B, F]; w_ih, w_hh, bias: D per-direction torch-layout arrays ([4H, F], [4H, H],
    [4H] = b_ih + b_hh; `hh_transposed`: w_hh [H, 4H], `inference_layout`); h0, c0 [D, B, H]
    with D = 1 (forward) or 2 (forward, reverse). Returns y [T, B, D*H] in `dtype` (the matmul
    operand dtype), h_T and c_T [D, B, H] float32.
    """
    directions = len(w_ih)
    reverse = (False, True)[:directions]
    gates_x = input_gates([x] * directions, w_ih, bias, reverse, precision, dtype)
    run = recurrence if custom_vjp else recurrence_autodiff
    hs, (h_last, c_last) = run(gates_x, w_hh, h0, c0, precision, unroll, dtype, hh_transposed)
    y = jnp.concatenate([hs[:, 0], hs[::-1, 1]], axis=-1) if directions == 2 else hs[:, 0]
    return y.astype(dtype), h_last, c_last


# --------------------------------------------------------------------------------------------
# cuDNN backend


def uses_cudnn(backend: str, input_dtype: Any, dtype: Any) -> bool:
    """Whether an LSTM with `backend` runs on cuDNN: always for "cudnn"; for "auto" on a GPU
    when both its input and its compute `dtype` are float32 (cuDNN's path is float32 only)."""
    if backend == "cudnn":
        return True
    return (
        backend == "auto"
        and jax.default_backend() == "gpu"
        and input_dtype == jnp.float32
        and compute_dtype(dtype) == jnp.float32
    )


def pack_cudnn_weights(layers: Sequence[Sequence[tuple[Array, Array, Array, Array]]]) -> Array:
    """Flat weight vector of `jax.experimental.rnn.lstm` from torch-layout weights.

    `layers[k][d] = (W_ih, W_hh, b_ih, b_hh)`. Layout (see jax/experimental/rnn.py): all
    W_ih, W_hh of every pseudo-layer (layer-major, forward before reverse), then all b_ih, b_hh.
    """
    pseudo = [weights for layer in layers for weights in layer]
    flat = [w.reshape(-1) for w_ih, w_hh, _, _ in pseudo for w in (w_ih, w_hh)]
    flat += [b for _, _, b_ih, b_hh in pseudo for b in (b_ih, b_hh)]
    return jnp.concatenate(flat)


def lstm_cudnn(
    x: Array,
    layers: Sequence[Sequence[tuple[Array, Array, Array, Array]]],
    h0: Array,
    c0: Array,
    precision: Any = None,
) -> tuple[Array, Array, Array]:
    """Stacked (B)LSTM through cuDNN: x [B, T, F] -> y [B, T, D*H], h_n, c_n [L*D, B, H]."""
    from jax.experimental import rnn

    batch, steps, features = x.shape
    hidden = layers[0][0][1].shape[1]
    seq_lengths = jnp.full((batch,), steps, dtype=jnp.int32)
    return rnn.lstm(
        x,
        h0,
        c0,
        pack_cudnn_weights(layers),
        seq_lengths,
        features,
        hidden,
        len(layers),
        0.0,
        len(layers[0]) == 2,
        precision,
    )


# --------------------------------------------------------------------------------------------


class LSTM(nn.Module):
    """Stacked (bidirectional) LSTM with torch.nn.LSTM semantics and state_dict names.

    Input `[B, T, F]` (`[T, B, F]` if `batch_first=False`) -> `[B, T, H * num_directions]`.
    Dropout acts between layers only, and only when `train=True` (rng stream "dropout").
    backend: "scan" (any device), "cudnn" (`jax.experimental.rnn`, GPU only, float32), or
    "auto" (cudnn on a GPU with float32 input, else scan). `custom_vjp=False` uses plain autodiff
    through the scan (a reference; much slower backward). `weight_init`/`bias_init` default to
    torch's U(-1/sqrt(H), 1/sqrt(H)). `dtype="bfloat16"`: bfloat16 matmul operands and output,
    float32 gates and state (`jaxsep.nn.precision`); the cuDNN backend is float32 only, so "auto"
    then takes the scan.
    """

    hidden_size: int
    num_layers: int = 1
    bidirectional: bool = False
    dropout: float = 0.0
    backend: str = "auto"
    batch_first: bool = True
    custom_vjp: bool = True
    unroll: int = 1
    precision: Any = None
    weight_init: Initializer | None = None
    bias_init: Initializer | None = None
    dtype: Any = "float32"

    def _check(self, x: Array) -> None:
        where = "jaxsep.nn.LSTM"
        dtype = compute_dtype(self.dtype, where)
        if self.backend == "cudnn" and dtype != jnp.float32:
            raise JaxsepError(
                f"{where}: backend='cudnn' computes in float32 only; use backend='scan' or "
                f"'auto' for dtype={dtype.name}"
            )
        if self.backend not in BACKENDS:
            raise JaxsepError(f"{where}: unknown backend {self.backend!r}; use one of {BACKENDS}")
        if self.hidden_size < 1 or self.num_layers < 1:
            raise JaxsepError(
                f"{where}: hidden_size and num_layers must be >= 1, "
                f"got {self.hidden_size} and {self.num_layers}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise JaxsepError(f"{where}: dropout must be in [0, 1), got {self.dropout}")
        if x.ndim != 3:
            raise JaxsepError(f"{where}: input must be 3-D [batch, time, features], got {x.shape}")
        if self.backend == "cudnn" and jax.default_backend() != "gpu":
            raise JaxsepError(
                f"{where}: backend='cudnn' needs a GPU but jax runs on "
                f"{jax.default_backend()!r}; use backend='scan' or 'auto'"
            )

    def _layer_params(self, layer: int, in_features: int) -> tuple[list[tuple[Array, ...]], bool]:
        """One layer's (W_ih, W_hh, b_ih, b_hh) per direction, and whether W_hh came in the
        inference layout ([H, 4H] under `weight_hh_t_*`, `inference_layout`)."""
        weight_init = self.weight_init or torch_uniform_init(self.hidden_size)
        bias_init = self.bias_init or torch_uniform_init(self.hidden_size)
        gates = 4 * self.hidden_size
        shapes = [(gates, in_features), (gates, self.hidden_size), (gates,), (gates,)]
        inits = (weight_init, weight_init, bias_init, bias_init)
        names = [list(param_names(layer, reverse)) for reverse in (False, True)]
        transposed = self.has_variable("params", transposed_name(names[0][1]))
        if transposed:  # flax checks the stored shape against this one (never initialised)
            shapes[1] = (self.hidden_size, gates)
            for direction in names:
                direction[1] = transposed_name(direction[1])
        directions = 2 if self.bidirectional else 1
        params = [
            tuple(self.param(*args) for args in zip(direction, inits, shapes))
            for direction in names[:directions]
        ]
        return params, transposed

    @nn.compact
    def __call__(
        self,
        x: Array,
        initial_state: tuple[Array, Array] | None = None,
        *,
        train: bool = False,
        return_state: bool = False,
    ) -> Array | tuple[Array, tuple[Array, Array]]:
        """Run the stack; `initial_state`/final state are torch-shaped (h, c), [L*D, B, H]."""
        self._check(x)
        directions = 2 if self.bidirectional else 1
        if not self.batch_first:
            x = x.swapaxes(0, 1)
        batch = x.shape[0]
        state_shape = (self.num_layers * directions, batch, self.hidden_size)
        if initial_state is None:
            h0 = c0 = jnp.zeros(state_shape, jnp.result_type(x.dtype, jnp.float32))
        else:
            h0, c0 = initial_state
            if h0.shape != state_shape or c0.shape != state_shape:
                raise JaxsepError(
                    f"jaxsep.nn.LSTM: initial_state must be two arrays of shape {state_shape}, "
                    f"got {h0.shape} and {c0.shape}"
                )
        use_cudnn = uses_cudnn(self.backend, x.dtype, self.dtype)
        drop = nn.Dropout(self.dropout, deterministic=not train)
        params, transposed = [], []
        for layer in range(self.num_layers):
            in_features = x.shape[-1] if layer == 0 else directions * self.hidden_size
            layer_params, layer_transposed = self._layer_params(layer, in_features)
            if use_cudnn and layer_transposed:  # cuDNN packs torch's layout
                layer_params = [(a, b.T, c, d) for a, b, c, d in layer_params]
            params.append(layer_params)
            transposed.append(layer_transposed and not use_cudnn)

        if use_cudnn and not (train and self.dropout > 0.0 and self.num_layers > 1):
            y, h_n, c_n = lstm_cudnn(x, params, h0, c0, self.precision)
        else:
            y, h_n, c_n = self._run_layers(x, params, h0, c0, drop, use_cudnn, transposed)
        if not self.batch_first:
            y = y.swapaxes(0, 1)
        return (y, (h_n, c_n)) if return_state else y

    def _run_layers(self, x, params, h0, c0, drop, use_cudnn, transposed):
        """Layer by layer (batch-first in and out), with dropout between layers."""
        directions = len(params[0])
        y = x if use_cudnn else x.swapaxes(0, 1)
        finals_h, finals_c = [], []
        for layer, layer_params in enumerate(params):
            if layer > 0:
                y = drop(y)
            states = slice(layer * directions, (layer + 1) * directions)
            if use_cudnn:
                y, h_n, c_n = lstm_cudnn(y, [layer_params], h0[states], c0[states], self.precision)
            else:
                w_ih, w_hh, b_ih, b_hh = zip(*layer_params)
                y, h_n, c_n = lstm_layer_scan(
                    y,
                    w_ih,
                    w_hh,
                    [i + h for i, h in zip(b_ih, b_hh)],
                    h0[states],
                    c0[states],
                    custom_vjp=self.custom_vjp,
                    precision=self.precision,
                    unroll=self.unroll,
                    dtype=compute_dtype(self.dtype),
                    hh_transposed=transposed[layer],
                )
            finals_h.append(h_n)
            finals_c.append(c_n)
        if not use_cudnn:
            y = y.swapaxes(0, 1)
        return y, jnp.concatenate(finals_h), jnp.concatenate(finals_c)

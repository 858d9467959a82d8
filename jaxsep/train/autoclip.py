"""AutoClip (Seetharaman et al. 2020) as an optax transformation.

The reference (`pseeth/autoclip`) keeps every gradient norm seen so far, takes the p-th percentile
of that history *including the current norm* (`np.percentile`, linear interpolation) and calls
`torch.nn.utils.clip_grad_norm_(params, threshold)`. Its history grows without bound; a jit-able
state needs a fixed size, so we keep a ring buffer of the last `history_size` norms (default
10000) and mask the unused slots. Up to `history_size` steps this is exactly the reference; after
that the percentile is over a sliding window of the most recent `history_size` norms.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

DEFAULT_HISTORY_SIZE = 10_000
TORCH_CLIP_EPS = 1e-6  # torch.nn.utils.clip_grad_norm_ divides by (norm + 1e-6)


class AutoClipState(NamedTuple):
    history: jax.Array  # [history_size] float32 gradient norms (ring buffer)
    count: jax.Array  # int32: norms seen so far (the next slot is count % history_size)


def masked_percentile(history: jax.Array, count: jax.Array, percentile: float) -> jax.Array:
    """`np.percentile(history[:n], percentile)` (linear) over the first n = min(count, size) slots."""
    size = history.shape[0]
    n = jnp.minimum(count, size)
    valid = jnp.arange(size) < n
    ordered = jnp.sort(jnp.where(valid, history, jnp.inf))
    rank = (percentile / 100.0) * (n - 1).astype(jnp.float32)
    lo = jnp.floor(rank).astype(jnp.int32)
    hi = jnp.minimum(lo + 1, n - 1)
    frac = rank - lo.astype(jnp.float32)
    lo_value, hi_value = ordered[lo], ordered[hi]
    # numpy's lerp: a + (b - a) * t, written so that t == 0 never touches an inf slot
    return jnp.where(frac > 0, lo_value + (hi_value - lo_value) * frac, lo_value)


def autoclip(
    percentile: float,
    history_size: int = DEFAULT_HISTORY_SIZE,
    initial_history: jax.Array | None = None,
) -> optax.GradientTransformation:
    """Clip the global gradient norm to the `percentile`-th percentile of past norms.

    `initial_history` seeds the buffer (e.g. the norms kept from pre-training, to carry the
    history into a fine-tune); by default a fine-tune starts with an empty history, like the
    reference handler attached to a fresh trainer.
    """
    if not 0.0 <= percentile <= 100.0:
        raise ValueError(f"autoclip percentile must be in [0, 100], got {percentile}")

    def init_fn(params) -> AutoClipState:
        del params
        history = jnp.zeros((history_size,), jnp.float32)
        count = jnp.zeros((), jnp.int32)
        if initial_history is not None:
            seed = jnp.asarray(initial_history, jnp.float32)[-history_size:]
            history = history.at[: seed.shape[0]].set(seed)
            count = jnp.asarray(seed.shape[0], jnp.int32)
        return AutoClipState(history, count)

    def update_fn(updates, state: AutoClipState, params=None):
        del params
        norm = optax.tree.norm(updates).astype(jnp.float32)
        history = state.history.at[state.count % history_size].set(norm)
        count = state.count + 1
        threshold = masked_percentile(history, count, percentile)
        scale = jnp.minimum(1.0, threshold / (norm + TORCH_CLIP_EPS))
        updates = jax.tree.map(lambda g: (g * scale).astype(g.dtype), updates)
        return updates, AutoClipState(history, count)

    return optax.GradientTransformation(init_fn, update_fn)


def autoclip_threshold(state: AutoClipState, percentile: float) -> jax.Array:
    """The threshold the last update used (for logging)."""
    return masked_percentile(state.history, state.count, percentile)


def autoclip_history(opt_state) -> jax.Array | None:
    """The norms recorded by the AutoClip inside `opt_state`, oldest first (None if absent).

    Pass it as `initial_history` to carry the clipping statistics into a fine-tune.
    """
    found = [
        leaf
        for leaf in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, AutoClipState))
        if isinstance(leaf, AutoClipState)
    ]
    if not found:
        return None
    history, count = found[0].history, int(found[0].count)
    size = history.shape[0]
    if count <= size:
        return history[:count]
    return jnp.roll(history, -(count % size))

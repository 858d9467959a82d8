"""Train state pytree and the optimizer built from a config.

The train state is a plain dict (big_vision style) so orbax saves it without custom types:
`{"step": int32, "params": ..., "model_state": {...} (e.g. batch_stats), "opt_state": ...,
"rng": uint32[2]}`.

Optimizer chain (torch semantics), applied to the gradients in this order:
  1. clip: `clip_norm > 0` -> global-norm clip; `autoclip_percentile > 0` -> AutoClip;
  2. `adam`: coupled L2 like torch `Adam(weight_decay=wd)` (wd * param added to the gradient
     *before* the moments); `adamw`: decoupled decay like torch `AdamW` (lr * wd * param);
  3. `-lr`, then `* lr_scale` (reduce-on-plateau; passed to `update(..., lr_scale=s)`).
Frozen parameters (regexes over "/"-joined paths, `optimizer.freeze`) get a zero update through
`optax.multi_transform` and keep no Adam moments. To also skip computing their gradients, the
loss sees them through `jax.lax.stop_gradient` (`stop_gradient_frozen`), so XLA drops that
backward work.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxsep.errors import JaxsepError
from jaxsep.train.autoclip import autoclip

TRAINABLE, FROZEN = "trainable", "frozen"


def path_name(path) -> str:
    """ "params/encoder/kernel" for a jax key path."""
    parts = []
    for key in path:
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
        else:
            parts.append(str(key))
    return "/".join(parts)


def frozen_mask(params, freeze: Sequence[str]) -> Any:
    """A tree of bools: True where the leaf path matches one of the `freeze` regexes."""
    patterns = [re.compile(p) for p in freeze]
    return jax.tree_util.tree_map_with_path(
        lambda path, _: any(p.search(path_name(path)) for p in patterns), params
    )


def stop_gradient_frozen(params, freeze: Sequence[str]):
    """Params with `stop_gradient` on frozen leaves, so no gradient is computed through them."""
    if not freeze:
        return params
    mask = frozen_mask(params, freeze)
    return jax.tree.map(lambda x, m: jax.lax.stop_gradient(x) if m else x, params, mask)


def scale_by_lr_scale() -> optax.GradientTransformationExtraArgs:
    """Multiply updates by the `lr_scale` extra argument (1.0 when not given)."""

    def init_fn(params):
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None, *, lr_scale=1.0, **extra):
        del params, extra
        return jax.tree.map(lambda u: (u * lr_scale).astype(u.dtype), updates), state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _check_hyperparameters(
    lr: float, wd: float, b1: float, b2: float, eps: float, momentum: float
) -> None:
    """The ranges torch.optim enforces: optax takes any float and would, e.g., climb the loss
    with a negative learning rate."""
    for name, value, ok, needs in [
        ("lr", lr, 0 < lr < math.inf, "> 0"),
        ("weight_decay", wd, 0 <= wd < math.inf, ">= 0"),
        ("b1", b1, 0 <= b1 < 1, "in [0, 1)"),
        ("b2", b2, 0 <= b2 < 1, "in [0, 1)"),
        ("eps", eps, 0 <= eps < math.inf, ">= 0"),
        ("momentum", momentum, 0 <= momentum < math.inf, ">= 0"),
    ]:
        if not ok:
            raise JaxsepError(f"config: optimizer.{name} must be {needs}, got {value}")


def make_optimizer(
    opt: ml_collections.ConfigDict | dict,
    freeze: Sequence[str] = (),
    autoclip_initial_history: jax.Array | None = None,
) -> optax.GradientTransformationExtraArgs:
    """Build the chain described in the module docstring from `config.optimizer`.

    `autoclip_initial_history` (see `autoclip.autoclip_history`) keeps AutoClip's statistics
    across a fine-tune; by default the history starts empty.
    """
    name = opt["name"]
    lr, wd = float(opt["lr"]), float(opt.get("weight_decay", 0.0))
    b1, b2, eps = (
        float(opt.get("b1", 0.9)),
        float(opt.get("b2", 0.999)),
        float(opt.get("eps", 1e-8)),
    )
    _check_hyperparameters(lr, wd, b1, b2, eps, float(opt.get("momentum", 0.0)))
    for pattern in freeze:
        try:
            re.compile(pattern)
        except re.error as e:
            raise JaxsepError(f"config: optimizer.freeze pattern {pattern!r}: {e}") from None
    parts = []
    if opt.get("clip_norm", 0.0) > 0 and opt.get("autoclip_percentile", 0.0) > 0:
        raise JaxsepError(
            "config: set optimizer.clip_norm or optimizer.autoclip_percentile, not both"
        )
    if opt.get("clip_norm", 0.0) > 0:
        parts.append(optax.clip_by_global_norm(float(opt["clip_norm"])))
    if opt.get("autoclip_percentile", 0.0) > 0:
        parts.append(
            autoclip(
                float(opt["autoclip_percentile"]),
                int(opt.get("autoclip_history", 10_000)),
                initial_history=autoclip_initial_history,
            )
        )
    if name == "adam":
        if wd > 0:
            parts.append(optax.add_decayed_weights(wd))
        parts += [optax.scale_by_adam(b1=b1, b2=b2, eps=eps), optax.scale(-lr)]
    elif name == "adamw":
        parts += [optax.scale_by_adam(b1=b1, b2=b2, eps=eps), optax.add_decayed_weights(wd)]
        parts.append(optax.scale(-lr))
    elif name == "sgd":
        parts += [optax.trace(decay=float(opt.get("momentum", 0.0))), optax.scale(-lr)]
    else:
        raise JaxsepError(f"config: unknown optimizer.name {name!r} (adam, adamw, sgd)")
    inner = optax.chain(*parts)
    if freeze:
        labels = lambda params: jax.tree.map(  # noqa: E731
            lambda m: FROZEN if m else TRAINABLE, frozen_mask(params, freeze)
        )
        inner = optax.multi_transform({TRAINABLE: inner, FROZEN: optax.set_to_zero()}, labels)
    return optax.chain(inner, scale_by_lr_scale())


def create_train_state(params, model_state, tx: optax.GradientTransformation, rng) -> dict:
    """The train state dict at step 0."""
    return {
        "step": jnp.zeros((), jnp.int32),
        "params": params,
        "model_state": model_state,
        "opt_state": tx.init(params),
        "rng": rng,
    }

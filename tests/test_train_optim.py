"""Optimizer pieces against their references: AutoClip, plateau, early stop, freezing, torch Adam."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from jaxsep.train.autoclip import AutoClipState, autoclip, autoclip_history, autoclip_threshold
from jaxsep.train.schedules import (
    EarlyStopState,
    PlateauState,
    early_stop_step,
    plateau_step,
    should_stop,
)
from jaxsep.train.state import make_optimizer, stop_gradient_frozen


def test_autoclip_reproduces_reference_trajectory(fixtures_dir):
    ref = np.load(fixtures_dir / "chimera" / "autoclip.npz")
    percentile = float(ref["percentile"])
    tx = autoclip(percentile)
    params = {"p0": jnp.zeros((7, 5)), "p1": jnp.zeros((11,))}

    @jax.jit
    def step(state, grads):
        clipped, state = tx.update(grads, state)
        return state, autoclip_threshold(state, percentile), optax.tree.norm(clipped)

    state = tx.init(params)
    thresholds, after = [], []
    for t in range(ref["grads_p0"].shape[0]):
        grads = {"p0": jnp.asarray(ref["grads_p0"][t]), "p1": jnp.asarray(ref["grads_p1"][t])}
        state, threshold, norm = step(state, grads)
        thresholds.append(float(threshold))
        after.append(float(norm))
    np.testing.assert_allclose(thresholds, ref["clip_threshold_f64"], rtol=1e-5)
    np.testing.assert_allclose(after, ref["grad_norm_after_clip_f64"], rtol=1e-5)
    assert int(state.count) == 300


def test_autoclip_ring_buffer_keeps_the_most_recent_norms():
    tx = autoclip(50.0, history_size=4)
    state = tx.init({"w": jnp.zeros(())})
    for g in [100.0, 100.0, 1.0, 2.0, 3.0, 4.0]:
        _, state = tx.update({"w": jnp.asarray(g)}, state)
    # the two 100s fell out of the window: median of [1, 2, 3, 4]
    assert float(autoclip_threshold(state, 50.0)) == pytest.approx(2.5)


def test_autoclip_initial_history_seeds_the_percentile():
    tx = autoclip(0.0, initial_history=jnp.asarray([0.5, 3.0]))
    state = tx.init({"w": jnp.zeros(())})
    clipped, state = tx.update({"w": jnp.asarray(2.0)}, state)
    assert isinstance(state, AutoClipState) and int(state.count) == 3
    assert float(clipped["w"]) == pytest.approx(0.5, rel=1e-5)


def test_autoclip_history_carries_into_a_fine_tune():
    config = {"name": "adam", "lr": 1e-3, "autoclip_percentile": 50.0, "autoclip_history": 3}
    tx = make_optimizer(config)
    params = {"w": jnp.zeros(())}
    state = tx.init(params)
    for g in [1.0, 2.0, 3.0, 4.0, 5.0]:
        _, state = tx.update({"w": jnp.asarray(g)}, state, params)
    np.testing.assert_array_equal(autoclip_history(state), [3.0, 4.0, 5.0])
    fine_tune = make_optimizer(config, autoclip_initial_history=autoclip_history(state))
    np.testing.assert_array_equal(autoclip_history(fine_tune.init(params)), [3.0, 4.0, 5.0])
    assert autoclip_history(make_optimizer({"name": "adam", "lr": 1e-3}).init(params)) is None


def test_plateau_reproduces_torch_reduce_lr_on_plateau(fixtures_dir):
    ref = np.load(fixtures_dir / "chimera" / "plateau_scheduler.npz")
    state, lrs = PlateauState(lr=1e-3), []
    for value in ref["val_loss_f64"]:
        state = plateau_step(state, value, factor=0.5, patience=5)
        lrs.append(state.lr)
    np.testing.assert_array_equal(lrs, ref["lr_after_step_f64"])


def test_plateau_respects_min_lr_and_cooldown():
    state = PlateauState(lr=1.0)
    lrs = []
    for _ in range(12):
        state = plateau_step(state, 1.0, factor=0.1, patience=1, cooldown=2, min_lr=0.05)
        lrs.append(state.lr)
    # eval 0 improves on inf; reduce on the 2nd bad eval; 2 cooldown evals count no bad ones
    assert lrs[:3] == [1.0, 1.0, pytest.approx(0.1)]
    assert lrs[3:6] == [pytest.approx(0.1)] * 3
    assert lrs[6:] == [pytest.approx(0.05)] * 6  # 0.1 * 0.1 is floored at min_lr


def test_early_stopping_fires_after_patience_bad_evaluations():
    state = EarlyStopState()
    values = [3.0, 2.0, 2.5, 2.0, 2.1]
    fired = []
    for step, value in enumerate(values):
        state = early_stop_step(state, value, step)
        fired.append(should_stop(state, patience=3))
    assert fired == [False, False, False, False, True]
    assert state.best == 2.0 and state.best_step == 1
    assert not should_stop(state, patience=0)


def _quadratic_grads(params, targets, freeze=()):
    def loss(p):
        p = stop_gradient_frozen(p, freeze)
        leaves = zip(jax.tree.leaves(p), jax.tree.leaves(targets))
        return sum(jnp.sum((x - t) ** 2 * (i + 1)) for i, (x, t) in enumerate(leaves))

    return jax.grad(loss)(params)


def test_freezing_leaves_frozen_params_bit_identical():
    rng = np.random.default_rng(0)
    params = {
        "encoder": {"kernel": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)},
        "head": {"kernel": jnp.asarray(rng.normal(size=(4, 2)), jnp.float32)},
    }
    targets = jax.tree.map(jnp.zeros_like, params)
    tx = make_optimizer({"name": "adam", "lr": 0.1, "weight_decay": 0.01}, freeze=["^encoder/"])
    state = tx.init(params)
    new = params
    for _ in range(3):
        grads = _quadratic_grads(new, targets, freeze=["^encoder/"])
        assert not np.any(np.asarray(grads["encoder"]["kernel"]))  # no gradient through frozen
        assert np.all(np.asarray(grads["head"]["kernel"]) != 0)
        # even a nonzero gradient on frozen leaves must not move them
        updates, state = tx.update(_quadratic_grads(new, targets), state, new)
        new = optax.apply_updates(new, updates)
    np.testing.assert_array_equal(new["encoder"]["kernel"], params["encoder"]["kernel"])
    assert not np.allclose(new["head"]["kernel"], params["head"]["kernel"])


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_weight_decay_matches_torch(name):
    rng = np.random.default_rng(1)
    init = {
        "a": rng.normal(size=(5, 3)).astype(np.float32),
        "b": rng.normal(size=(3,)).astype(np.float32),
    }
    targets = {k: rng.normal(size=v.shape).astype(np.float32) for k, v in init.items()}
    lr, wd, lr_scales = 1e-2, 0.1, [1.0, 1.0, 0.5, 0.5, 0.25]

    torch_params = {k: torch.tensor(v, requires_grad=True) for k, v in init.items()}
    cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
    opt = cls(list(torch_params.values()), lr=lr, weight_decay=wd)
    for scale in lr_scales:
        for group in opt.param_groups:
            group["lr"] = lr * scale
        opt.zero_grad()
        loss = sum(
            ((torch_params[k] - torch.tensor(targets[k])) ** 2 * (i + 1)).sum()
            for i, k in enumerate(torch_params)
        )
        loss.backward()
        opt.step()

    tx = make_optimizer({"name": name, "lr": lr, "weight_decay": wd})
    params = jax.tree.map(jnp.asarray, init)
    state = tx.init(params)
    for scale in lr_scales:
        grads = _quadratic_grads(params, targets)
        updates, state = tx.update(grads, state, params, lr_scale=scale)
        params = optax.apply_updates(params, updates)
    for k in init:
        np.testing.assert_allclose(params[k], torch_params[k].detach().numpy(), atol=1e-6)


def test_clip_norm_and_autoclip_are_exclusive():
    from jaxsep.errors import JaxsepError

    with pytest.raises(JaxsepError, match="not both"):
        make_optimizer({"name": "adam", "lr": 1e-3, "clip_norm": 1.0, "autoclip_percentile": 10.0})
    with pytest.raises(JaxsepError, match="unknown optimizer"):
        make_optimizer({"name": "lion", "lr": 1e-3})


@pytest.mark.parametrize(
    "field, value, needs",
    [
        ("lr", -1e-3, "optimizer.lr must be > 0, got -0.001"),
        ("lr", 0.0, "optimizer.lr must be > 0"),
        ("lr", float("nan"), "optimizer.lr must be > 0, got nan"),
        ("weight_decay", -1e-5, "optimizer.weight_decay must be >= 0"),
        ("b1", 1.0, r"optimizer.b1 must be in \[0, 1\)"),
        ("b2", -0.1, r"optimizer.b2 must be in \[0, 1\)"),
        ("eps", -1e-8, "optimizer.eps must be >= 0"),
        ("momentum", -0.9, "optimizer.momentum must be >= 0"),
    ],
)
def test_out_of_range_hyperparameters_fail_in_one_line(field, value, needs):
    from jaxsep.errors import JaxsepError

    with pytest.raises(JaxsepError, match=needs):
        make_optimizer({"name": "sgd", "lr": 1e-3, field: value})


def test_bad_freeze_pattern_is_named():
    from jaxsep.errors import JaxsepError

    with pytest.raises(JaxsepError, match=r"optimizer.freeze pattern 'lstm\[': "):
        make_optimizer({"name": "adam", "lr": 1e-3}, freeze=["lstm["])

"""The one generic trainer: jitted sharded step, periodic eval, plateau LR, early stop, resume.

Recipes give it pure functions; it owns the mesh, compilation, logging and checkpoints:
  * `init_fn(rng) -> (params, model_state)`;
  * `loss_fn(params, model_state, batch, rng, train) -> (loss, (metrics, new_model_state))`;
  * `train_iter`: yields batches (pytrees of global arrays sharded on `data`, or host arrays on
    one process) and has `get_state()`/`set_state()` (a grain `DatasetIterator` has them);
  * `eval_fn(params, model_state) -> {name: float}` (optional), lower `config.eval_metric` is
    better.
"""

from __future__ import annotations

import functools
import json
import math
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
import optax

from jaxsep.compile_options import donate_train_state
from jaxsep.errors import JaxsepError, is_count
from jaxsep.train.checkpoint import RunCheckpointer
from jaxsep.train.mesh import batch_sharding, make_mesh, replicated
from jaxsep.train.schedules import (
    EarlyStopState,
    PlateauState,
    early_stop_step,
    plateau_step,
    should_stop,
)
from jaxsep.train.state import create_train_state, make_optimizer, stop_gradient_frozen

LossFn = Callable[..., tuple[jax.Array, tuple[dict, Any]]]


def default_train_config() -> ml_collections.ConfigDict:
    """Trainer keys every recipe config extends (one comment per field)."""
    c = ml_collections.ConfigDict()
    c.seed = 0  # init and per-step dropout/noise rng: fold_in(PRNGKey(seed), step)
    c.batch_size = 8  # global batch (all processes); the data pipeline reads it
    c.num_steps = 1000  # total optimizer steps
    c.log_every = 50  # steps between train lines in metrics.jsonl (and NaN checks)
    c.eval_every = 500  # steps between eval_fn calls (0: never)
    c.eval_metric = "loss"  # key of eval_fn's result driving plateau and early stopping
    c.checkpoint_every = 500  # steps between checkpoints (the last step is always saved)
    c.keep_checkpoints = 3  # newest checkpoints kept on disk
    c.async_checkpointing = True  # write checkpoints in the background
    c.early_stop_patience = 0  # evaluations without improvement before stopping (0: off)
    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.name = "adam"  # adam (coupled L2 like torch Adam) | adamw | sgd
    c.optimizer.lr = 1e-3  # base learning rate
    c.optimizer.weight_decay = 0.0  # torch weight_decay
    c.optimizer.b1 = 0.9
    c.optimizer.b2 = 0.999
    c.optimizer.eps = 1e-8
    c.optimizer.momentum = 0.0  # sgd only
    c.optimizer.clip_norm = 0.0  # global-norm clip (0: off)
    c.optimizer.autoclip_percentile = 0.0  # AutoClip percentile (0: off)
    c.optimizer.autoclip_history = 10_000  # AutoClip ring-buffer length
    c.optimizer.freeze = ()  # regexes over "params/a/b" paths of frozen parameters
    c.plateau = ml_collections.ConfigDict()
    c.plateau.patience = 0  # torch ReduceLROnPlateau patience in evaluations (0: off)
    c.plateau.factor = 0.3  # lr multiplier on a plateau
    c.plateau.threshold = 1e-4  # relative improvement that counts
    c.plateau.cooldown = 0
    c.plateau.min_lr = 0.0
    return c


def _lookup(config: ml_collections.ConfigDict, key: str) -> Any:
    """``config["a"]["b"]`` for ``"a.b"``; None where a recipe has no such key."""
    value = config
    for part in key.split("."):
        if not hasattr(value, "get") or part not in value:
            return None
        value = value[part]
    return value


def check_train_config(config: ml_collections.ConfigDict) -> None:
    """One-line errors for trainer keys out of range, before any data or compile work (a negative
    step count trained nothing and exported the initial weights; a plateau factor >= 1 raised
    the learning rate; zero eval examples failed deep in numpy)."""
    minimum = {"num_steps": 1, "batch_size": 1, "data.stats_examples": 1}
    for key in ("log_every", "eval_every", "checkpoint_every", "keep_checkpoints"):
        minimum[key] = 0  # 0: never (eval) or every step (log, checkpoint), 0 kept = 1
    for key in ("early_stop_patience", "plateau.patience", "plateau.cooldown", "data.workers"):
        minimum[key] = 0
    if (_lookup(config, "eval_every") or 0) > 0:
        minimum["data.eval_examples"] = 1
    for key, low in minimum.items():
        value = _lookup(config, key)
        if value is None:
            continue
        if not is_count(value, low):
            needs = "a positive integer" if low == 1 else "an integer >= 0"
            raise JaxsepError(f"config: {key} must be {needs}, got {value!r}")
    for key, ok, needs in [
        ("plateau.factor", lambda v: 0 < v < 1, "in (0, 1)"),
        ("plateau.threshold", lambda v: v >= 0, ">= 0"),
        ("plateau.min_lr", lambda v: v >= 0, ">= 0"),
    ]:
        value = _lookup(config, key)
        if value is not None and not ok(value):
            raise JaxsepError(f"config: {key} must be {needs}, got {value!r}")


def _to_dict(config) -> dict:
    return json.loads(config.to_json()) if hasattr(config, "to_json") else dict(config)


def _host_floats(tree: dict) -> dict:
    return {k: float(np.asarray(v)) for k, v in jax.device_get(tree).items()}


def _finite_metrics(metrics: dict, workdir: Path, step: int) -> dict:
    """Fetch the step's metrics; a NaN/inf loss stops the run with one line."""
    values = _host_floats(metrics)
    if not math.isfinite(values["loss"]):
        raise JaxsepError(f"{workdir}: loss is {values['loss']} at step {step}")
    return values


class _MetricsLog:
    """`workdir/metrics.jsonl`, written by process 0 only."""

    def __init__(self, path: Path):
        self.file = open(path, "a") if jax.process_index() == 0 else None  # noqa: SIM115

    def write(self, record: dict) -> None:
        if self.file is not None:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def _progress(total: int, initial: int):
    from tqdm import tqdm

    show = sys.stderr.isatty() and jax.process_index() == 0
    return tqdm(total=total, initial=initial, disable=not show, dynamic_ncols=True)


def _device_leaf(leaf: Any, sharding: jax.sharding.Sharding) -> jax.Array:
    """A batch leaf as a global device array: jax.Array leaves pass through (the grain pipeline
    makes them), host arrays (a custom iterator's) are transferred explicitly."""
    if isinstance(leaf, jax.Array):
        return leaf
    return jax.make_array_from_process_local_data(sharding, np.asarray(leaf))


def make_train_step(loss_fn: LossFn, tx: optax.GradientTransformation, freeze=()):
    """`step(state, batch, lr_scale) -> (state, metrics)`; frozen leaves get no gradient work."""

    def step(state, batch, lr_scale):
        rng = jax.random.fold_in(state["rng"], state["step"])

        def objective(params):
            params = stop_gradient_frozen(params, freeze)
            return loss_fn(params, state["model_state"], batch, rng, True)

        grad_fn = jax.value_and_grad(objective, has_aux=True)
        (loss, (metrics, model_state)), grads = grad_fn(state["params"])
        updates, opt_state = tx.update(
            grads, state["opt_state"], state["params"], lr_scale=lr_scale
        )
        new_state = {
            **state,
            "step": state["step"] + 1,
            "params": optax.apply_updates(state["params"], updates),
            "model_state": model_state,
            "opt_state": opt_state,
        }
        return new_state, {**metrics, "loss": loss, "grad_norm": optax.tree.norm(grads)}

    return step


@functools.lru_cache(maxsize=8)
def _optimizer_from_json(
    optimizer_json: str, freeze: tuple[str, ...]
) -> optax.GradientTransformation:
    """One optimizer object per distinct config, so the compiled step below can be reused."""
    return make_optimizer(json.loads(optimizer_json), freeze)


@functools.lru_cache(maxsize=8)
def _compiled_functions(init_fn, loss_fn, tx, freeze: tuple[str, ...], mesh):
    """`(init(rng) -> state, step(state, batch, lr_scale))` jitted with explicit shardings.

    Cached, so calling `train` again in one process (a resume, a test) does not recompile:
    parameters and optimizer state are replicated (`replicated(mesh)` is a pytree prefix for the
    whole state), the batch is split on `data`, and the state buffers are donated to the step
    on accelerators (not on CPU, where donation is slower: `compile_options.donate_train_state`).
    """
    repl = replicated(mesh)

    def init(rng):
        init_rng, step_rng = jax.random.split(rng)
        params, model_state = init_fn(init_rng)
        return create_train_state(params, model_state, tx, step_rng)

    step = jax.jit(
        make_train_step(loss_fn, tx, freeze),
        in_shardings=(repl, batch_sharding(mesh), repl),
        out_shardings=(repl, repl),
        donate_argnums=0 if donate_train_state(mesh.devices.flat[0].platform) else (),
    )
    return jax.jit(init, out_shardings=repl), step


def train(
    *,
    config: ml_collections.ConfigDict,
    workdir: str | Path,
    init_fn: Callable,
    loss_fn: LossFn,
    train_iter: Iterator,
    eval_fn: Callable[[Any, Any], dict] | None = None,
    optimizer: optax.GradientTransformation | None = None,
) -> dict:
    """Train to `config.num_steps` (or early stop), resuming from `workdir` if it has a run.

    Returns the final train state. Writes `workdir/checkpoints/` and appends to
    `workdir/metrics.jsonl` (after a crash, steps past the last checkpoint are logged again).
    """
    check_train_config(config)
    if not (hasattr(train_iter, "get_state") and hasattr(train_iter, "set_state")):
        raise TypeError(
            "train_iter needs get_state()/set_state() (a grain DatasetIterator has them)"
        )
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    freeze = tuple(config.optimizer.freeze)
    if optimizer is None:
        optimizer = _optimizer_from_json(
            json.dumps(_to_dict(config.optimizer), sort_keys=True), freeze
        )
    mesh = make_mesh()
    init, train_step = _compiled_functions(init_fn, loss_fn, optimizer, freeze, mesh)

    rng = jax.random.PRNGKey(config.seed)
    ckpt = RunCheckpointer(
        workdir / "checkpoints",
        save_every=config.checkpoint_every,
        keep=config.keep_checkpoints,
        async_save=config.async_checkpointing,
    )
    base_lr = float(config.optimizer.lr)
    plateau, early = PlateauState(lr=base_lr), EarlyStopState()
    data_sharding, repl = batch_sharding(mesh), replicated(mesh)
    if ckpt.latest_step() is not None:
        target = jax.tree.map(
            lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=repl),
            jax.eval_shape(init, rng),
        )
        state, meta = ckpt.restore(target, train_iter)
        plateau = PlateauState.from_json(meta["plateau"])
        early = EarlyStopState(**meta["early_stop"])
    else:
        state = init(rng)

    step = int(jax.device_get(state["step"]))

    @functools.lru_cache(maxsize=1)  # sent to the devices only when the plateau changes it
    def lr_scale(lr: float) -> jax.Array:
        return jax.device_put(np.float32(lr / base_lr), repl)

    log = _MetricsLog(workdir / "metrics.jsonl")
    bar = _progress(config.num_steps, step)
    start = last_time = time.perf_counter()
    examples = 0
    stop = should_stop(early, config.early_stop_patience)

    def meta() -> dict:
        return {
            "config": _to_dict(config),
            "plateau": plateau.to_json(),
            "early_stop": vars(early),
        }

    try:
        while step < config.num_steps and not stop:
            batch = jax.tree.map(lambda x: _device_leaf(x, data_sharding), next(train_iter))
            examples += jax.tree.leaves(batch)[0].shape[0]
            # every input is on the devices already: the step moves nothing from the host, and
            # the guard makes a regression (an implicit transfer per step) an error, not a slowdown
            with jax.transfer_guard("disallow"):
                state, metrics = train_step(state, batch, lr_scale(plateau.lr))
            step += 1
            bar.update(1)
            last = step == config.num_steps
            if last or step % max(config.log_every, 1) == 0:
                values = _finite_metrics(metrics, workdir, step)
                now = time.perf_counter()
                log.write(
                    {
                        "step": step,
                        "split": "train",
                        **values,
                        "lr": plateau.lr,
                        "examples_per_s": examples / max(now - last_time, 1e-9),
                        "seconds": now - start,
                    }
                )
                bar.set_postfix(loss=f"{values['loss']:.4g}")
                last_time, examples = now, 0
            if eval_fn is not None and config.eval_every > 0 and step % config.eval_every == 0:
                results = {
                    k: float(v) for k, v in eval_fn(state["params"], state["model_state"]).items()
                }
                value = results[config.eval_metric]
                if config.plateau.patience > 0:
                    plateau = plateau_step(
                        plateau,
                        value,
                        factor=config.plateau.factor,
                        patience=config.plateau.patience,
                        threshold=config.plateau.threshold,
                        cooldown=config.plateau.cooldown,
                        min_lr=config.plateau.min_lr,
                    )
                early = early_stop_step(early, value, step)
                stop = should_stop(early, config.early_stop_patience)
                log.write(
                    {
                        "step": step,
                        "split": "eval",
                        **results,
                        "lr": plateau.lr,
                        "best": early.best,
                        "best_step": early.best_step,
                        "seconds": time.perf_counter() - start,
                    }
                )
            if last or stop or step % max(config.checkpoint_every, 1) == 0:
                _finite_metrics(metrics, workdir, step)  # never checkpoint a diverged state
                ckpt.save(step, state, train_iter, meta(), force=last or stop)
        ckpt.wait()
    finally:
        bar.close()
        log.close()
        ckpt.close()
    return state

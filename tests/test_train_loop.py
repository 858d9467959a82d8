"""The generic trainer on a tiny regression: sharding, logging, eval hooks, exact resume, kill -9.

Also runnable as a script (`python tests/test_train_loop.py WORKDIR NUM_STEPS HANG_AT`) so the
kill -9 test can crash a real training process in the middle of a checkpoint save.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest

W_TRUE = np.linspace(-1.0, 1.0, 12, dtype=np.float32).reshape(4, 3)


def make_config(num_steps: int, **overrides):
    from jaxsep.train.loop import default_train_config

    config = default_train_config()
    config.num_steps = num_steps
    config.batch_size = 16
    config.log_every = 2
    config.eval_every = 0
    config.checkpoint_every = 3
    config.optimizer.lr = 1e-2
    for key, value in overrides.items():
        node = config
        *parents, leaf = key.split(".")
        for name in parents:
            node = node[name]
        node[leaf] = value
    return config


def init_fn(rng):
    k1, k2 = jax.random.split(rng)
    params = {
        "hidden": {"kernel": jax.random.normal(k1, (4, 16)) * 0.5, "bias": jnp.zeros((16,))},
        "out": {"kernel": jax.random.normal(k2, (16, 3)) * 0.25, "bias": jnp.zeros((3,))},
    }
    return params, {"examples_seen": jnp.zeros((), jnp.float32)}


SEEN_BATCH_SHARDINGS = []  # filled at compile time by loss_fn


def loss_fn(params, model_state, batch, rng, train):
    jax.debug.inspect_array_sharding(batch["x"], callback=SEEN_BATCH_SHARDINGS.append)
    noise = 0.01 * jax.random.normal(rng, batch["x"].shape) if train else 0.0
    h = jnp.tanh((batch["x"] + noise) @ params["hidden"]["kernel"] + params["hidden"]["bias"])
    pred = h @ params["out"]["kernel"] + params["out"]["bias"]
    loss = jnp.mean((pred - batch["y"]) ** 2)
    seen = model_state["examples_seen"] + batch["x"].shape[0]
    return loss, ({"mae": jnp.mean(jnp.abs(pred - batch["y"]))}, {"examples_seen": seen})


def make_iterator(batch_size: int = 16, seed: int = 3):
    """grain: shuffled, repeated examples -> batches -> global arrays sharded on `data`."""
    from jaxsep.train.mesh import batch_sharding, make_mesh

    sharding = batch_sharding(make_mesh())

    def example(index, rng: np.random.Generator):
        x = rng.normal(size=(4,)).astype(np.float32)
        return {"x": x, "y": x @ W_TRUE, "index": np.int32(index)}

    def to_global(batch):
        return jax.tree.map(lambda a: jax.make_array_from_process_local_data(sharding, a), batch)

    ds = grain.MapDataset.range(64).seed(seed).shuffle().repeat().random_map(example)
    ds = ds.batch(batch_size, drop_remainder=True).to_iter_dataset().map(to_global)
    return iter(ds)


class RecordingIterator:
    """Delegates to a grain iterator and keeps the example indices of every batch drawn."""

    def __init__(self, inner):
        self.inner, self.indices = inner, []

    def __iter__(self):
        return self

    def __next__(self):
        batch = next(self.inner)
        self.indices.append(np.asarray(batch["index"]).tolist())
        return batch

    def get_state(self):
        return self.inner.get_state()

    def set_state(self, state):
        self.inner.set_state(state)


def run(workdir, num_steps: int, **overrides):
    from jaxsep.train.loop import train

    it = RecordingIterator(make_iterator())
    state = train(
        config=make_config(num_steps, **overrides),
        workdir=workdir,
        init_fn=init_fn,
        loss_fn=loss_fn,
        train_iter=it,
    )
    return state, it.indices


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def assert_trees_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


NUM_STEPS, SAVE_EVERY = 12, 3


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """One uninterrupted reference run: (workdir, final state, example indices per step)."""
    workdir = tmp_path_factory.mktemp("straight")
    state, batches = run(workdir, NUM_STEPS, checkpoint_every=SAVE_EVERY)
    return workdir, state, batches


def test_loss_decreases_with_the_batch_sharded_over_8_devices(straight):
    workdir, state, batches = straight
    assert jax.device_count() == 8
    sharding = SEEN_BATCH_SHARDINGS[0]  # what the jitted step saw
    assert len(sharding.device_set) == 8 and not sharding.is_fully_replicated
    assert sharding.shard_shape((16, 4)) == (2, 4)
    leaf = state["params"]["hidden"]["kernel"]
    assert leaf.sharding.is_fully_replicated and len(leaf.sharding.device_set) == 8
    assert int(state["step"]) == NUM_STEPS and len(batches) == NUM_STEPS
    assert float(state["model_state"]["examples_seen"]) == NUM_STEPS * 16

    lines = read_jsonl(workdir / "metrics.jsonl")
    assert [r["step"] for r in lines] == list(range(2, NUM_STEPS + 1, 2))
    for key in ("loss", "lr", "examples_per_s", "seconds", "mae", "grad_norm"):
        assert all(key in r for r in lines), key
    assert lines[-1]["loss"] < 0.7 * lines[0]["loss"]
    assert _checkpoint_steps(workdir) == [6, 9, 12]  # keep_checkpoints = 3


def test_eval_drives_plateau_and_early_stopping(tmp_path):
    from jaxsep.train.loop import train

    evals = iter([1.0, 0.5, 0.6, 0.7, 0.8, 0.9])  # best at eval 2, then only worse
    config = make_config(30, eval_every=2, early_stop_patience=3, checkpoint_every=4)
    config.plateau.patience, config.plateau.factor = 1, 0.5
    state = train(
        config=config,
        workdir=tmp_path,
        init_fn=init_fn,
        loss_fn=loss_fn,
        train_iter=make_iterator(),
        eval_fn=lambda params, model_state: {"loss": next(evals)},
    )
    assert int(state["step"]) == 10  # evals at steps 2..10; 3 bad evals after step 4
    evals_logged = [r for r in read_jsonl(tmp_path / "metrics.jsonl") if r["split"] == "eval"]
    assert [r["step"] for r in evals_logged] == [2, 4, 6, 8, 10]
    assert [r["lr"] for r in evals_logged] == [1e-2, 1e-2, 1e-2, 5e-3, 5e-3]
    assert evals_logged[-1]["best_step"] == 4
    train_lr = {r["step"]: r["lr"] for r in read_jsonl(tmp_path / "metrics.jsonl")}
    assert train_lr[10] == 5e-3
    # a restart of a run that stopped early does not train further
    again = train(
        config=config,
        workdir=tmp_path,
        init_fn=init_fn,
        loss_fn=loss_fn,
        train_iter=make_iterator(),
        eval_fn=lambda params, model_state: {"loss": 0.0},
    )
    assert int(again["step"]) == 10


def test_nan_loss_is_a_one_line_error(tmp_path):
    from jaxsep.errors import JaxsepError
    from jaxsep.train.loop import train

    def nan_loss(params, model_state, batch, rng, train):
        loss, aux = loss_fn(params, model_state, batch, rng, train)
        return loss * jnp.nan, aux

    with pytest.raises(JaxsepError, match="loss is nan at step 2"):
        train(
            config=make_config(10),
            workdir=tmp_path,
            init_fn=init_fn,
            loss_fn=nan_loss,
            train_iter=make_iterator(),
        )


def test_resume_continues_bit_identically(straight, tmp_path):
    _, reference, reference_batches = straight
    first, first_batches = run(tmp_path, 5, checkpoint_every=SAVE_EVERY)
    assert int(first["step"]) == 5 and _checkpoint_steps(tmp_path) == [3, 5]
    resumed, resumed_batches = run(tmp_path, NUM_STEPS, checkpoint_every=SAVE_EVERY)
    assert first_batches + resumed_batches == reference_batches
    assert int(resumed["step"]) == NUM_STEPS
    assert_trees_equal(resumed["params"], reference["params"])
    assert_trees_equal(resumed["opt_state"], reference["opt_state"])
    assert_trees_equal(resumed["model_state"], reference["model_state"])


def _resize_hidden(width: int, extra: bool = False):
    """`init_fn` with another hidden width (a changed config), or with one more parameter."""

    def init(rng):
        params, model_state = init_fn(rng)
        hidden, out = params["hidden"], params["out"]
        params["hidden"] = {"kernel": hidden["kernel"][:, :width], "bias": hidden["bias"][:width]}
        params["out"] = {"kernel": out["kernel"][:width], "bias": out["bias"]}
        if extra:
            params["scale"] = jnp.ones((3,))
        return params, model_state

    return init


def test_resuming_a_changed_or_damaged_run_is_a_one_line_error(tmp_path):
    from jaxsep.errors import JaxsepError
    from jaxsep.train.loop import train

    run(tmp_path, 3, checkpoint_every=3)
    step_dir = tmp_path / "checkpoints" / "3"

    def resume(init):
        with pytest.raises(JaxsepError) as info:
            train(
                config=make_config(6, checkpoint_every=3),
                workdir=tmp_path,
                init_fn=init,
                loss_fn=loss_fn,
                train_iter=make_iterator(),
            )
        message = str(info.value)
        assert "\n" not in message and str(step_dir) in message
        return message

    message = resume(_resize_hidden(8))
    assert "'params/hidden/bias' is (16,) in the checkpoint, (8,) in this run" in message
    assert "new --workdir" in message
    assert "checkpoint has no 'params/scale'" in resume(_resize_hidden(16, extra=True))
    (step_dir / "data" / "process_0-of-1.json").unlink()
    assert "data-iterator state missing" in resume(init_fn)
    (step_dir / "state" / "_METADATA").unlink()
    assert "cannot read checkpoint metadata" in resume(init_fn)
    assert _checkpoint_steps(tmp_path) == [3]  # nothing overwritten by the failed resumes


def test_host_batches_are_moved_explicitly_and_the_step_transfers_nothing(
    straight, tmp_path, monkeypatch
):
    """A custom iterator's numpy batches train like the pipeline's device arrays; inside the
    step a host array is an error (the loop's transfer guard), not a silent per-step copy."""
    from jaxsep.train import loop

    _, reference, _ = straight

    class NumpyBatches(RecordingIterator):
        def __next__(self):
            return jax.tree.map(np.asarray, next(self.inner))

    config = make_config(NUM_STEPS, checkpoint_every=SAVE_EVERY)
    state = loop.train(
        config=config,
        workdir=tmp_path / "numpy",
        init_fn=init_fn,
        loss_fn=loss_fn,
        train_iter=NumpyBatches(make_iterator()),
    )
    assert_trees_equal(state["params"], reference["params"])

    # hand the step host arrays: the loop's guard refuses the implicit transfer
    monkeypatch.setattr(loop, "_device_leaf", lambda leaf, sharding: leaf)
    with pytest.raises(Exception, match="Disallowed host-to-device transfer"):
        loop.train(
            config=config,
            workdir=tmp_path / "implicit",
            init_fn=init_fn,
            loss_fn=loss_fn,
            train_iter=NumpyBatches(make_iterator()),
        )


def _checkpoint_steps(workdir: Path) -> list[int]:
    root = workdir / "checkpoints"
    return sorted(int(p.name) for p in root.iterdir() if p.name.isdigit()) if root.is_dir() else []


def test_kill_9_mid_save_resumes_from_last_complete_checkpoint(straight, tmp_path):
    _, reference, _ = straight
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    cmd = [sys.executable, __file__, str(tmp_path), str(NUM_STEPS), "9"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)
    for line in proc.stdout:  # the script announces each save and hangs inside the one at 9
        if line.split() == ["saving", "9"]:
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait()
    proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL

    # the step-9 save was cut short: it exists only as orbax's temporary directory
    leftovers = [p.name for p in (tmp_path / "checkpoints").iterdir() if not p.name.isdigit()]
    assert any(name.startswith("9.") and "tmp" in name for name in leftovers), leftovers
    latest = _checkpoint_steps(tmp_path)[-1]  # orbax renames a step dir only once complete
    assert latest == 6 and _checkpoint_steps(tmp_path) == [3, 6]  # lost < one interval

    resumed, resumed_batches = run(tmp_path, NUM_STEPS, checkpoint_every=SAVE_EVERY)
    assert len(resumed_batches) == NUM_STEPS - latest
    assert_trees_equal(resumed["params"], reference["params"])
    assert all(p.name.isdigit() for p in (tmp_path / "checkpoints").iterdir())  # cleaned up


if __name__ == "__main__":
    from jaxsep.train.loop import train

    class HangsInSave(RecordingIterator):
        """Announces each checkpoint of the iterator state; hangs in the one at `hang_at`."""

        def __init__(self, inner, hang_at: int):
            super().__init__(inner)
            self.hang_at = hang_at

        def get_state(self):
            print("saving", len(self.indices), flush=True)
            if len(self.indices) == self.hang_at:
                time.sleep(600)
            return super().get_state()

    out, steps, hang_at = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    train(
        config=make_config(steps, checkpoint_every=SAVE_EVERY, async_checkpointing=False),
        workdir=out,
        init_fn=init_fn,
        loss_fn=loss_fn,
        train_iter=HangsInSave(make_iterator(), hang_at),
    )

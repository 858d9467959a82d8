"""Two local processes form one JAX cluster and run the same jitted train step as one process.

Also runnable as a script: `python tests/test_distributed.py` runs two train steps on this
process's share of a fixed batch; `python tests/test_distributed.py train WORKDIR STEPS` runs the
generic trainer (checkpoints, resume) on this process's slice of a grain pipeline. Each prints one
JSON line with the resulting parameters.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np

GLOBAL_BATCH = 8


def _worker() -> None:
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    from jaxsep.train.mesh import (
        batch_sharding,
        make_mesh,
        maybe_initialize_distributed,
        replicated,
    )

    initialized = maybe_initialize_distributed(False)  # driven by JAXSEP_* env vars
    import jax.numpy as jnp

    from jaxsep.train.loop import make_train_step
    from jaxsep.train.state import create_train_state, make_optimizer

    rng = np.random.default_rng(0)
    x = rng.normal(size=(GLOBAL_BATCH, 5)).astype(np.float32)
    y = (x @ np.linspace(-1, 1, 10, dtype=np.float32).reshape(5, 2)).astype(np.float32)
    # each process loads only its contiguous share of the global batch
    share = GLOBAL_BATCH // jax.process_count()
    rows = slice(jax.process_index() * share, (jax.process_index() + 1) * share)

    mesh = make_mesh()
    repl, data = replicated(mesh), batch_sharding(mesh)
    batch = {
        "x": jax.make_array_from_process_local_data(data, x[rows]),
        "y": jax.make_array_from_process_local_data(data, y[rows]),
    }

    def loss_fn(params, model_state, batch, rng, train):
        pred = jnp.tanh(batch["x"] @ params["w1"]) @ params["w2"]
        return jnp.mean((pred - batch["y"]) ** 2), ({}, model_state)

    tx = make_optimizer({"name": "adam", "lr": 0.1, "weight_decay": 1e-3, "clip_norm": 1.0})

    def init(key):
        k1, k2 = jax.random.split(key)
        params = {"w1": jax.random.normal(k1, (5, 8)), "w2": jax.random.normal(k2, (8, 2))}
        return create_train_state(params, {}, tx, key)

    state = jax.jit(init, out_shardings=repl)(jax.random.PRNGKey(0))
    initial_w1 = np.asarray(jax.device_get(state["params"]["w1"]))
    step = jax.jit(
        make_train_step(loss_fn, tx),
        in_shardings=(repl, data, repl),
        out_shardings=(repl, repl),
        donate_argnums=0,
    )
    for _ in range(2):
        state, metrics = step(state, batch, np.float32(1.0))
    params = jax.device_get(state["params"])
    print(
        json.dumps(
            {
                "initialized": initialized,
                "process": jax.process_index(),
                "devices": jax.device_count(),
                "local_devices": jax.local_device_count(),
                "batch_shape": list(batch["x"].shape),
                "loss": float(metrics["loss"]),
                "checksums": {k: float(np.sum(np.abs(v))) for k, v in params.items()},
                "w1": np.asarray(params["w1"]).ravel().tolist(),
                "w1_moved": float(np.max(np.abs(params["w1"] - initial_w1))),
            }
        ),
        flush=True,
    )
    if initialized:
        jax.distributed.shutdown()


def _train_worker(workdir: str, num_steps: int) -> None:
    """`train()` in a cluster: per-process grain slice, per-process iterator checkpoints."""
    import grain
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    from jaxsep.train.mesh import batch_sharding, make_mesh, maybe_initialize_distributed

    maybe_initialize_distributed(False)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import test_train_loop as problem  # the tiny regression of the single-process tests

    from jaxsep.train.loop import train

    sharding = batch_sharding(make_mesh())

    def example(index, rng):
        x = rng.normal(size=(4,)).astype(np.float32)
        return {"x": x, "y": x @ problem.W_TRUE}

    def to_global(batch):
        return jax.tree.map(lambda a: jax.make_array_from_process_local_data(sharding, a), batch)

    ds = grain.MapDataset.range(64).seed(3).shuffle().repeat().random_map(example)
    ds = ds[jax.process_index() :: jax.process_count()]
    ds = ds.batch(16 // jax.process_count(), drop_remainder=True).to_iter_dataset().map(to_global)
    state = train(
        config=problem.make_config(num_steps, checkpoint_every=2),
        workdir=workdir,
        init_fn=problem.init_fn,
        loss_fn=problem.loss_fn,
        train_iter=iter(ds),
    )
    params = jax.device_get(state["params"])
    leaves = [np.asarray(leaf).ravel().tolist() for leaf in jax.tree.leaves(params)]
    # every process takes part in writing the model directory, then reads it back
    from jaxsep.modeldir import load_variables, read_config, save_model_dir

    config = {"model": "mask_mlp", "step": int(state["step"])}
    model_dir = save_model_dir(os.path.join(workdir, "model"), config, {"params": params})
    restored = load_variables(model_dir)["params"]
    same = all(
        np.array_equal(a, b) for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(params))
    )
    model_dir_ok = same and read_config(model_dir) == config
    print(
        json.dumps({"step": int(state["step"]), "params": leaves, "model_dir_ok": model_dir_ok}),
        flush=True,
    )
    jax.distributed.shutdown()


def _env(num_devices: int, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS" and not k.startswith("JAXSEP_")}
    env["JAXSEP_COMPILE_CACHE"] = "off"  # not the user's home (conftest)
    return {**env, "JAX_PLATFORMS": "cpu", "JAX_NUM_CPU_DEVICES": str(num_devices), **extra}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _last_json_line(output: str) -> dict:
    return json.loads(output.strip().splitlines()[-1])


def _run_cluster(*args: str) -> list[dict]:
    """Run this script as a 2-process cluster (2 CPU devices each); one JSON dict per process."""
    cluster = {"JAXSEP_DISTRIBUTED": "1", "JAXSEP_COORDINATOR": f"localhost:{_free_port()}"}
    cluster["JAXSEP_NUM_PROCESSES"] = "2"
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, *args],
            env=_env(2, **cluster, JAXSEP_PROCESS_ID=str(pid)),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for pid in range(2)
    ]
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err[-2000:]
        outputs.append(_last_json_line(out))
    return outputs


def test_two_processes_match_one_process():
    outputs = _run_cluster()
    single = subprocess.run(
        [sys.executable, __file__], env=_env(4), capture_output=True, text=True, timeout=240
    )
    assert single.returncode == 0, single.stderr[-2000:]
    reference = _last_json_line(single.stdout)

    assert [o["process"] for o in outputs] == [0, 1]
    for o in outputs:
        assert o["initialized"] and o["devices"] == 4 and o["local_devices"] == 2
        assert o["batch_shape"] == [GLOBAL_BATCH, 5]
    assert not reference["initialized"] and reference["devices"] == 4
    # both processes hold the same replicated parameters
    assert outputs[0]["checksums"] == outputs[1]["checksums"]
    assert outputs[0]["w1"] == outputs[1]["w1"]
    # ... equal to one process on the full batch (gloo vs in-process all-reduce order: float32)
    np.testing.assert_allclose(outputs[0]["w1"], reference["w1"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(outputs[0]["loss"], reference["loss"], rtol=1e-5)
    assert reference["w1_moved"] > 0.05  # two Adam steps at lr 0.1 moved the parameters


def test_two_process_training_resumes_from_its_checkpoint(tmp_path):
    straight = _run_cluster("train", str(tmp_path / "straight"), "8")
    assert [o["step"] for o in straight] == [8, 8]
    assert [o["model_dir_ok"] for o in straight] == [True, True]
    assert straight[0]["params"] == straight[1]["params"]
    steps = tmp_path / "straight" / "checkpoints"
    assert sorted(p.name for p in (steps / "4" / "data").glob("process_*")) == [
        "process_0-of-2.json",
        "process_1-of-2.json",
    ]
    # a copy of the run as it was at step 4 (later steps removed) resumes to the same end
    shutil.copytree(steps / "4", tmp_path / "resumed" / "checkpoints" / "4")
    resumed = _run_cluster("train", str(tmp_path / "resumed"), "8")
    assert [o["step"] for o in resumed] == [8, 8]
    logged = (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in logged] == [6, 8]  # only steps 5-8 were run
    assert resumed[0]["params"] == straight[0]["params"]
    assert resumed[1]["params"] == straight[1]["params"]


if __name__ == "__main__":
    if sys.argv[1:2] == ["train"]:
        _train_worker(sys.argv[2], int(sys.argv[3]))
    else:
        _worker()

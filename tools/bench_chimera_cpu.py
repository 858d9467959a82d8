"""Paper-size ChimeraNet (4 x 500 BLSTM, D 20) training step on this machine: chimera loss
(0.01 DC + 0.99 MI), dropout 0.3, AutoClip p=10 + Adam 1e-3, batch B x S seconds at 16 kHz.
Random weights and signals: only the time is measured. Prints one JSON line.

    python tools/bench_chimera_cpu.py --batch 4 --seconds 2 --reps 5
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxsep.losses import chimera as losses
from jaxsep.models.chimera import ChimeraNet, mixture_magnitude
from jaxsep.train.state import make_optimizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    model = ChimeraNet(dropout=0.3, lstm_backend="scan")
    rng = np.random.default_rng(0)
    samples = int(args.seconds * 16000)
    sources = jnp.asarray(rng.standard_normal((args.batch, 2, samples)) * 0.1, jnp.float32)
    mix = sources.sum(1)
    variables = jax.jit(model.init)(jax.random.key(0), jnp.ones((1, 3, 257)))
    tx = make_optimizer({"name": "adam", "lr": 1e-3, "autoclip_percentile": 10})
    state = (variables["params"], variables["batch_stats"], tx.init(variables["params"]))

    def step(state, mix, sources, key):
        params, stats, opt_state = state
        mag = mixture_magnitude(mix)
        source_mag = jnp.moveaxis(mixture_magnitude(sources), 1, -1)
        assignments = losses.ideal_binary_mask(source_mag)
        weights = losses.magnitude_weights(mag)

        def loss_fn(p):
            out, new = model.apply(
                {"params": p, "batch_stats": stats},
                mag,
                train=True,
                mutable=["batch_stats"],
                rngs={"dropout": key},
            )
            total = losses.chimera_loss(out, mag, source_mag, assignments, weights)[0]
            return total, new["batch_stats"]

        (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), new_stats, opt_state), loss

    step = jax.jit(step, donate_argnums=0)
    start = time.perf_counter()
    state, loss = step(state, mix, sources, jax.random.key(1))
    loss.block_until_ready()
    first = time.perf_counter() - start
    times = []
    for i in range(args.reps):
        start = time.perf_counter()
        state, loss = step(state, mix, sources, jax.random.key(i + 2))
        loss.block_until_ready()
        times.append(time.perf_counter() - start)
    print(
        json.dumps(
            {
                "bench": "chimera_cpu_paper_size",
                "batch": args.batch,
                "seconds": args.seconds,
                "frames": int(mixture_magnitude(mix).shape[1]),
                "compile_and_first_step_s": round(first, 2),
                "step_median_s": round(float(np.median(times)), 3),
                "step_min_s": round(float(np.min(times)), 3),
                "reps": args.reps,
                "loss_finite": bool(np.isfinite(float(loss))),
                "jax": jax.__version__,
                "load_avg": os.getloadavg(),
            }
        )
    )


if __name__ == "__main__":
    main()

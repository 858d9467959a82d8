"""Vector quantiser: Jukebox EMA replay (golden_bottleneck_ema.npz), frozen mode, chunking."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsep.nn import vq

N_CODES, DIM = 2048, 64


@pytest.fixture(scope="module")
def ema_golden(fixtures_dir):
    return dict(np.load(fixtures_dir / "jukebox" / "golden_bottleneck_ema.npz"))


@pytest.fixture(scope="module")
def checkpoint_codebook(fixtures_dir):
    from jaxsep.convert.jukebox import load_checkpoint

    state = load_checkpoint(fixtures_dir / "jukebox" / "vqvae_5b_width8.pth.tar")["model"]
    return state["bottleneck.level_blocks.0.k"].numpy()


def _scenario_start(name, golden, codebook):
    x = golden["x_flat"]
    if name == "C":  # fresh block: the first call initialises from the batch
        return vq.init_from_batch(x[golden["C_perm0"]][:N_CODES]), golden["C_perm1"]
    tokens = golden[f"{name}_k_elem_before"]
    assert np.all(tokens == tokens[0])
    return vq.restored_state(codebook, float(tokens[0])), golden[f"{name}_perm0"]


@pytest.mark.parametrize("name", ["A", "B", "C"])
def test_ema_update_replays_reference(name, ema_golden, checkpoint_codebook):
    g = ema_golden
    state, perm = _scenario_start(name, g, checkpoint_codebook)
    x = jnp.asarray(g["x_flat"])
    codes, min_dist = vq.nearest_codes(x, state.k, chunk_rows=1000)
    np.testing.assert_array_equal(np.asarray(codes).reshape(2, -1), g[f"{name}_codes"])
    np.testing.assert_allclose(jnp.mean(min_dist), g[f"{name}_metric_fit"], rtol=1e-5)
    new, stats = jax.jit(vq.ema_update)(state, x, codes, g["x_flat"][perm][:N_CODES])
    np.testing.assert_array_equal(np.asarray(new.k_elem) >= 1.0, g[f"{name}_kept_mask"])
    np.testing.assert_array_equal(new.k_elem, g[f"{name}_k_elem_after"])
    for field in ("k", "k_sum"):
        expected = g[f"{name}_{field}_after"]
        np.testing.assert_allclose(getattr(new, field), expected, rtol=1e-5, atol=1e-5)
    for metric in ("entropy", "used_curr", "usage", "dk"):
        np.testing.assert_allclose(
            getattr(stats, metric), g[f"{name}_metric_{metric}"], rtol=1e-4, err_msg=metric
        )
    np.testing.assert_allclose(vq.prenorm(x), g[f"{name}_metric_pn"], rtol=1e-5)


def test_chunked_argmin_equals_dense():
    rng = np.random.default_rng(0)
    x, k = (
        rng.normal(size=(1000, 8)).astype(np.float32),
        rng.normal(size=(37, 8)).astype(np.float32),
    )
    dense_codes, dense_dist = vq.nearest_codes(x, k, chunk_rows=4096)
    chunk_codes, chunk_dist = jax.jit(vq.nearest_codes, static_argnums=2)(x, k, 96)
    np.testing.assert_array_equal(dense_codes, chunk_codes)
    np.testing.assert_array_equal(dense_codes, np.argmin(((x[:, None] - k[None]) ** 2).sum(-1), 1))
    np.testing.assert_allclose(dense_dist, chunk_dist, rtol=1e-6)


def test_first_argmin_matches_argmin_including_ties():
    rng = np.random.default_rng(1)
    d = rng.integers(0, 5, size=(64, 300)).astype(np.float32)  # many tied minima per row
    codes, low = jax.jit(vq.first_argmin)(d)
    np.testing.assert_array_equal(codes, np.argmin(d, axis=-1))
    np.testing.assert_array_equal(low, d.min(axis=-1))
    d[3] = np.nan  # a diverged row still yields an index inside the codebook
    assert 0 <= int(vq.first_argmin(d)[0][3]) < d.shape[1]


def _module_variables(k):
    state = vq.restored_state(k)
    return {vq.CODEBOOK_COLLECTION: state._asdict()}


def test_frozen_mode_leaves_codebook_bit_identical(ema_golden, checkpoint_codebook):
    module = vq.VectorQuantizer(codebook_update="frozen")
    variables = _module_variables(checkpoint_codebook)
    x = ema_golden["x_flat"].reshape(2, 2048, DIM)
    (codes, quantised, commit, _), updated = module.apply(
        variables, x, train=True, mutable=[vq.CODEBOOK_COLLECTION]
    )
    jax.tree.map(np.testing.assert_array_equal, updated, variables)
    np.testing.assert_array_equal(codes, ema_golden["A_codes"])
    np.testing.assert_allclose(commit, ema_golden["A_commit_loss"], rtol=1e-5)
    np.testing.assert_allclose(quantised, checkpoint_codebook[codes], rtol=1e-6, atol=1e-6)


def test_ema_mode_updates_codebook_and_initialises_fresh_block(ema_golden):
    """A zero codebook is initialised from the first batch, then EMA-updated; rng drives restarts."""
    module = vq.VectorQuantizer()
    x = ema_golden["x_flat"].reshape(2, 2048, DIM)
    variables = module.init(jax.random.key(0), x)
    assert not variables[vq.CODEBOOK_COLLECTION]["initialised"]
    step = jax.jit(
        lambda v, x, key: module.apply(
            v, x, train=True, mutable=[vq.CODEBOOK_COLLECTION], rngs={"codebook": key}
        )
    )
    (codes, _, _, metrics), updated = step(variables, x, jax.random.key(3))
    book = updated[vq.CODEBOOK_COLLECTION]
    assert book["initialised"]
    # every row of a freshly initialised codebook is a distinct batch row: each is its own nearest
    assert float(metrics["used_curr"]) == N_CODES
    np.testing.assert_allclose(
        book["k_elem"].sum(), 0.99 * N_CODES + 0.01 * x.shape[0] * 2048, rtol=1e-6
    )
    counts = np.bincount(np.asarray(codes).ravel(), minlength=N_CODES)
    np.testing.assert_allclose(book["k_elem"], 0.99 + 0.01 * counts, rtol=1e-6)
    # inference never changes the codebook and needs no rng
    _, again = module.apply(updated, x, train=False, mutable=[vq.CODEBOOK_COLLECTION])
    jax.tree.map(np.testing.assert_array_equal, again, updated)


def test_straight_through_gradient_and_small_batch_restarts():
    """Fewer rows than codes: candidates are tiled with noise; gradient passes straight through."""
    module = vq.VectorQuantizer(n_codes=16, dim=4)
    x = jnp.asarray(np.random.default_rng(1).normal(size=(1, 5, 4)), jnp.float32)
    variables = {vq.CODEBOOK_COLLECTION: vq.restored_state(jnp.zeros((16, 4)))._asdict()}

    def loss(x):
        (_, quantised, commit, _), _ = module.apply(
            variables,
            x,
            train=True,
            mutable=[vq.CODEBOOK_COLLECTION],
            rngs={"codebook": jax.random.key(0)},
        )
        return jnp.sum(quantised * 2.0) + commit

    grad = jax.grad(loss)(x)
    np.testing.assert_allclose(grad, 2.0 + 2.0 * x / x.size, rtol=1e-5)
    (_, _, _, metrics), updated = module.apply(
        variables,
        x,
        train=True,
        mutable=[vq.CODEBOOK_COLLECTION],
        rngs={"codebook": jax.random.key(0)},
    )
    k = np.asarray(updated[vq.CODEBOOK_COLLECTION]["k"])
    # only code 0 (count 5 -> k_elem 1.04) survives; the 15 others restart near batch rows
    assert float(metrics["usage"]) == 1
    nearest = np.abs(k[1:, None] - np.asarray(x)[0][None]).max(-1).min(-1)
    assert np.all(nearest < 0.05) and np.all(nearest > 0)  # noise std 0.01 / sqrt(dim) = 0.005

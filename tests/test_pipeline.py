"""grain pipeline -> global batches sharded on `data`; determinism and iterator checkpoints."""

import json

import jax
import numpy as np
import pytest
import soundfile as sf
from jax.sharding import NamedSharding, PartitionSpec

from jaxsep.data.augment import Augmentation
from jaxsep.data.mixing import ExcerptSampler
from jaxsep.data.pipeline import (
    batch_dataset,
    make_batch_iterator,
    make_dataset,
    to_global,
)
from jaxsep.data.tracks import StemFolderSource
from jaxsep.errors import JaxsepError

SR = 44100
STEMS = ("drums", "bass", "other", "vocals")
FRAMES = 1024
AUGMENT = Augmentation(gain=True, channel_swap=True)


@pytest.fixture(scope="module")
def sampler(tmp_path_factory) -> ExcerptSampler:
    root = tmp_path_factory.mktemp("songs")
    rng = np.random.default_rng(0)
    t = np.arange(SR) / SR
    for k in range(3):
        (root / f"song{k}").mkdir()
        for s, name in enumerate(STEMS):
            tone = np.sin(2 * np.pi * (110 * (s + 1) + 7 * k) * t) + 0.1 * rng.standard_normal(SR)
            audio = np.stack([tone, np.roll(tone, 50)], axis=1) * 0.2
            sf.write(root / f"song{k}" / f"{name}.wav", audio.astype(np.float32), SR)
    return ExcerptSampler(StemFolderSource(root, stems=STEMS), frames=FRAMES)


@pytest.fixture(scope="module")
def mesh() -> jax.sharding.Mesh:
    assert jax.device_count() == 8
    return jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Explicit,))


def take(iterator, n):
    return [jax.tree.map(np.asarray, next(iterator)) for _ in range(n)]


def test_batch_is_one_global_array_sharded_on_data(sampler, mesh):
    it = make_batch_iterator(sampler, seed=0, global_batch_size=16, mesh=mesh, augment=AUGMENT)
    batch = next(it)
    assert batch["mixture"].shape == (16, FRAMES, 2)
    assert batch["sources"].shape == (16, 4, FRAMES, 2)
    for array in batch.values():
        assert isinstance(array, jax.Array) and array.dtype == np.float32
        assert array.sharding == NamedSharding(mesh, PartitionSpec("data"))
        shards = array.addressable_shards
        assert len({s.device for s in shards}) == 8
        assert all(s.data.shape == (2, *array.shape[1:]) for s in shards)
    np.testing.assert_allclose(
        np.asarray(batch["mixture"]), np.asarray(batch["sources"]).sum(1), rtol=1e-5, atol=1e-6
    )
    it.close()


def test_same_seed_same_batches_other_seed_differs(sampler, mesh):
    def run(seed):
        it = make_batch_iterator(
            sampler, seed=seed, global_batch_size=8, mesh=mesh, augment=AUGMENT
        )
        return take(it, 3)

    first, again, other = run(5), run(5), run(6)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a["sources"], b["sources"])
    assert not np.allclose(first[0]["mixture"], other[0]["mixture"])
    assert not np.allclose(first[0]["mixture"], first[1]["mixture"])


def test_restored_iterator_continues_identically(sampler, mesh):
    kwargs = dict(seed=3, global_batch_size=8, mesh=mesh, augment=AUGMENT)
    reference = make_batch_iterator(sampler, **kwargs)
    expected = take(reference, 5)
    it = make_batch_iterator(sampler, **kwargs)
    take(it, 2)
    state = json.loads(json.dumps(it.get_state()))  # what a checkpoint stores
    resumed = make_batch_iterator(sampler, **kwargs)
    resumed.set_state(state)
    for got, want in zip(take(resumed, 3), expected[2:]):
        np.testing.assert_array_equal(got["mixture"], want["mixture"])
        np.testing.assert_array_equal(got["sources"], want["sources"])


def test_processes_read_interleaved_slices_of_one_stream(sampler):
    dataset = make_dataset(sampler, seed=1, num_examples_per_epoch=64)
    whole = next(
        iter(batch_dataset(dataset, global_batch_size=8, process_count=1, process_index=0))
    )
    parts = [
        next(iter(batch_dataset(dataset, global_batch_size=8, process_count=2, process_index=p)))
        for p in range(2)
    ]
    assert parts[0]["mixture"].shape == (4, FRAMES, 2)
    np.testing.assert_array_equal(parts[0]["sources"], whole["sources"][0::2])
    np.testing.assert_array_equal(parts[1]["sources"], whole["sources"][1::2])


def test_finite_epochs_end(sampler):
    dataset = make_dataset(sampler, seed=1, num_examples_per_epoch=8, num_epochs=2)
    batches = list(batch_dataset(dataset, global_batch_size=4, process_count=1, process_index=0))
    assert len(batches) == 4
    assert not np.allclose(batches[0]["mixture"], batches[2]["mixture"])  # re-seeded epoch


@pytest.mark.parametrize("axis_type", [jax.sharding.AxisType.Explicit, jax.sharding.AxisType.Auto])
def test_to_global_builds_sharded_arrays_from_a_tree(axis_type):
    mesh = jax.make_mesh((8,), ("data",), axis_types=(axis_type,))
    sharding = NamedSharding(mesh, PartitionSpec("data"))
    tree = {"a": np.arange(16, dtype=np.float32).reshape(8, 2), "b": [np.ones((8,), np.int32)]}
    out = to_global(tree, sharding)
    assert out["a"].sharding == sharding and out["b"][0].sharding == sharding
    np.testing.assert_array_equal(np.asarray(out["a"]), tree["a"])
    assert [s.data.shape for s in out["a"].addressable_shards] == [(1, 2)] * 8


def test_batch_size_must_divide_over_devices(sampler, mesh):
    with pytest.raises(JaxsepError, match="12 does not divide over the 8 devices"):
        make_batch_iterator(sampler, seed=0, global_batch_size=12, mesh=mesh)


def test_worker_processes_give_the_same_stream_and_restore(sampler, mesh):
    kwargs = dict(seed=4, global_batch_size=8, mesh=mesh, augment=AUGMENT)
    in_process = make_batch_iterator(sampler, **kwargs)
    expected = take(in_process, 3)
    in_process.close()
    workers = make_batch_iterator(sampler, workers=1, **kwargs)
    got = take(workers, 2)
    state = workers.get_state()
    workers.close()
    resumed = make_batch_iterator(sampler, workers=1, **kwargs)
    resumed.set_state(state)
    got += take(resumed, 1)
    resumed.close()
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a["sources"], b["sources"])

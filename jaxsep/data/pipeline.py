"""grain pipeline: excerpts -> per-process batches -> global ``jax.Array`` batches sharded on ``data``.

Example ``k`` is drawn with a generator grain derives from ``(seed, k)``, so the stream is a pure
function of the seed: two runs agree, and a restored iterator state (the next index) continues
exactly where a checkpoint left off. Each process reads ``ds[process_index::process_count]`` and
contributes its slice of the global batch through ``jax.make_array_from_process_local_data``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grain
import jax
import numpy as np
from absl import flags
from jax.sharding import NamedSharding, PartitionSpec

from jaxsep.data.augment import Augmentation
from jaxsep.data.mixing import ExcerptSampler
from jaxsep.errors import JaxsepError

Batch = dict[str, np.ndarray]


class _SampleExcerpt(grain.transforms.RandomMap):
    """grain transform: index -> one excerpt (picklable, so it runs in ``mp_prefetch`` workers)."""

    def __init__(self, sampler: ExcerptSampler, augment: Augmentation | None) -> None:
        self.sampler = sampler
        self.augment = augment

    def random_map(self, element: int, rng: np.random.Generator) -> Batch:
        del element  # the example is a function of the rng grain seeds from (seed, index)
        return self.sampler.sample(rng, self.augment)


def make_dataset(
    sampler: ExcerptSampler,
    *,
    seed: int,
    num_examples_per_epoch: int = 10_000,
    num_epochs: int | None = None,
    augment: Augmentation | None = None,
) -> grain.MapDataset:
    """Random-access dataset of excerpts; ``num_epochs=None`` repeats forever.

    An "epoch" only sets when grain re-seeds: each epoch draws fresh excerpts.
    """
    if num_examples_per_epoch <= 0:
        raise JaxsepError(f"num_examples_per_epoch must be positive, got {num_examples_per_epoch}")
    ds = grain.MapDataset.range(num_examples_per_epoch).seed(seed)
    ds = ds.random_map(_SampleExcerpt(sampler, augment))
    return ds.repeat(num_epochs)


def batch_dataset(
    dataset: grain.MapDataset,
    *,
    global_batch_size: int,
    process_index: int | None = None,
    process_count: int | None = None,
    read_threads: int = 2,
    prefetch_batches: int = 4,
    workers: int = 0,
) -> grain.IterDataset:
    """This process's share of every global batch, as a checkpointable ``IterDataset``.

    ``workers`` > 0 decodes and augments in that many ``mp_prefetch`` processes (0: in-process,
    with ``read_threads`` threads; soundfile and the phase vocoder release the GIL in part).
    """
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    per_process = per_process_batch_size(global_batch_size, process_count)
    ds = dataset[process_index::process_count]
    ds = ds.batch(per_process, drop_remainder=True)
    options = grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=prefetch_batches)
    iter_ds = ds.to_iter_dataset(options)
    if workers > 0:
        _use_absl_flag_defaults()
        iter_ds = iter_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))
    return iter_ds


def _use_absl_flag_defaults() -> None:
    """grain's worker start-up reads absl flags, which only ``absl.app.run`` parses; outside an
    absl app mark them parsed so they read as their defaults instead of raising."""
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def per_process_batch_size(global_batch_size: int, process_count: int) -> int:
    if global_batch_size <= 0 or global_batch_size % process_count:
        raise JaxsepError(
            f"global batch size {global_batch_size} must be a positive multiple of the "
            f"{process_count} processes"
        )
    return global_batch_size // process_count


def data_sharding(mesh: jax.sharding.Mesh, axis: str = "data") -> NamedSharding:
    """Batch dimension split over ``axis``, everything else whole."""
    return NamedSharding(mesh, PartitionSpec(axis))


def check_divisible(global_batch_size: int, sharding: NamedSharding) -> None:
    """The batch dimension must split evenly over the devices of the ``data`` axis."""
    spec = sharding.spec[0] if len(sharding.spec) else None
    axes = (spec,) if isinstance(spec, str) else tuple(spec or ())
    shards = int(np.prod([sharding.mesh.shape[a] for a in axes])) if axes else 1
    if global_batch_size % shards:
        raise JaxsepError(
            f"global batch size {global_batch_size} does not divide over the {shards} devices "
            f"of mesh axis {axes}"
        )


def to_global(tree: Any, sharding: NamedSharding) -> Any:
    """Host numpy leaves (this process's rows) -> global ``jax.Array`` leaves (1 or many hosts)."""
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), tree)


class BatchIterator(Iterator[dict[str, jax.Array]]):
    """Global sharded batches ``{"mixture": [B, T, C], "sources": [B, S, T, C]}``.

    ``get_state``/``set_state`` delegate to grain's ``DatasetIterator`` (a small JSON-able dict),
    so a trainer saves it next to the model and resumes the exact stream.
    """

    def __init__(self, dataset: grain.IterDataset, sharding: NamedSharding) -> None:
        self.sharding = sharding
        self.grain_iterator = iter(dataset)

    def __next__(self) -> dict[str, jax.Array]:
        return to_global(next(self.grain_iterator), self.sharding)

    def get_state(self) -> dict[str, Any]:
        return self.grain_iterator.get_state()

    def set_state(self, state: dict[str, Any]) -> None:
        self.grain_iterator.set_state(state)

    def close(self) -> None:
        close = getattr(self.grain_iterator, "close", None)
        if close is not None:
            close()


def make_batch_iterator(
    sampler: ExcerptSampler,
    *,
    seed: int,
    global_batch_size: int,
    mesh: jax.sharding.Mesh,
    augment: Augmentation | None = None,
    num_examples_per_epoch: int = 10_000,
    num_epochs: int | None = None,
    axis: str = "data",
    read_threads: int = 2,
    prefetch_batches: int = 4,
    workers: int = 0,
) -> BatchIterator:
    """The whole pipeline for a trainer: sampler + seed + mesh -> iterator of global batches."""
    sharding = data_sharding(mesh, axis)
    check_divisible(global_batch_size, sharding)
    dataset = make_dataset(
        sampler,
        seed=seed,
        num_examples_per_epoch=num_examples_per_epoch,
        num_epochs=num_epochs,
        augment=augment,
    )
    batches = batch_dataset(
        dataset,
        global_batch_size=global_batch_size,
        read_threads=read_threads,
        prefetch_batches=prefetch_batches,
        workers=workers,
    )
    return BatchIterator(batches, sharding)


def batch_iterator_from_config(
    sampler: Any, config: Any, mesh: jax.sharding.Mesh, augment: Augmentation | None = None
) -> BatchIterator:
    """`make_batch_iterator` with a recipe config's `seed`, `batch_size`,
    `data.examples_per_epoch` and `data.workers` (the keys every recipe trains with)."""
    return make_batch_iterator(
        sampler,
        seed=config.seed,
        global_batch_size=config.batch_size,
        mesh=mesh,
        augment=augment,
        num_examples_per_epoch=config.data.examples_per_epoch,
        workers=config.data.workers,
    )

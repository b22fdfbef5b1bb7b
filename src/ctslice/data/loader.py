"""`build_loader`: the DataLoader that feeds training from the cache, set from `LoaderConfig`.

    loader = build_loader("cache", "train", cfg.loader)             # class-aware sampling, shuffled
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch)
        for batch in loader: ...                                     # batch["image"]: int16 (B, k, H, W)

Workers are separate processes that each read and decode slices (one core each, see cache/reader.py); batches
come back through shared memory in their stored dtypes, pinned when a GPU is there so the copy to it is
asynchronous, and `prefetch_factor` batches per worker stay queued so the GPU does not wait for data.

    with worker_errors():                                            # a CacheError raised in a worker arrives as
        for batch in loader: ...                                     # itself (one line), not torch's traceback
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, SequentialSampler, default_collate

from ..config import LoaderConfig
from .dataset import SliceBatch, SliceDataset
from .ring import RingBatch
from .sampler import ClassAwareSampler

RING_SPARE_SLOTS = 2
"""Ring slots per worker beyond its `prefetch_factor` batches in flight: the batch the caller works on and the
one it just let go of (whose release the main process may not have seen yet)."""


class RingLoader(DataLoader):
    """A DataLoader whose workers decode into reused shared-memory batch buffers (`ring.py`) when its dataset
    offers them (`make_ring(workers, slots, batch_size)`); otherwise, and with no workers, a plain DataLoader.
    Batches are the same dicts, and a caller may keep any of them as long as it likes."""

    def _get_iterator(self):
        make_ring = getattr(self.dataset, "make_ring", None)
        ring = None
        if self.num_workers > 0 and make_ring is not None and self.batch_size:
            # A new ring for each set of workers, before they start (forked ones inherit it, spawned ones get it
            # with the dataset); the iterator holds it, so it lives as long as its workers.
            ring = make_ring(self.num_workers, self.prefetch_factor + RING_SPARE_SLOTS, self.batch_size)
            self.dataset.ring = ring
        try:
            iterator = super()._get_iterator()
        finally:
            if ring is not None:
                self.dataset.ring = None  # the main process reads without it (e.g. `dataset[i]`)
        iterator._batch_ring = ring
        return iterator


def seed_worker(worker_id: int) -> None:
    """Each worker: numpy/python RNGs seeded from torch's per-worker seed (which the DataLoader derives from its
    generator, so the same config gives the same streams with fork and spawn), and single-threaded Blosc (see
    `dataset.single_threaded_blosc`; here for the whole process, which is the loader's own)."""
    import random

    import numcodecs.blosc

    numcodecs.blosc.use_threads = False
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def collate_slices(items: SliceBatch | list[dict]) -> dict | RingBatch:
    """Batch of items from `SliceDataset.__getitems__`: its batch buffer as is (no stacking copy), or in a worker
    whose buffer is a ring slot the token that the main process unpacks into the same dict (`ring.py`). A list of
    items whose tensors are consecutive views of one buffer is also returned as that buffer; anything else goes to
    default_collate."""
    if isinstance(items, SliceBatch):
        return items.collated()
    batch = {key: _whole_buffer([item[key] for item in items]) for key in ("image", "label")}
    if any(b is None for b in batch.values()):
        return default_collate(items)
    rest = default_collate([{k: v for k, v in item.items() if k not in batch} for item in items])
    return {**batch, **rest}


def _whole_buffer(views: list) -> torch.Tensor | None:
    """The (n, ...) tensor that `views` (n tensors) exactly tile, in order; None if they do not."""
    first = views[0]
    if not all(isinstance(v, torch.Tensor) for v in views):
        return None
    storage = first.untyped_storage()
    step = first.numel()
    if (storage.nbytes() != len(views) * step * first.element_size()
            or any(v.untyped_storage().data_ptr() != storage.data_ptr() or v.storage_offset() != j * step
                   or v.shape != first.shape or not v.is_contiguous() for j, v in enumerate(views))):
        return None
    return torch.empty(0, dtype=first.dtype).set_(storage, 0, (len(views), *first.shape))


def loader_kwargs(cfg: LoaderConfig, multiprocessing_context: str | None = None) -> dict:
    """DataLoader keyword arguments from the config (shared with the benchmark's .npy ceiling loader)."""
    workers = cfg.workers
    kwargs = dict(batch_size=cfg.batch_size, num_workers=workers, worker_init_fn=seed_worker, collate_fn=collate_slices,
                  pin_memory=cfg.pin_memory and torch.cuda.is_available())  # pinning without CUDA only warns
    if workers > 0:
        kwargs.update(prefetch_factor=cfg.prefetch_factor, persistent_workers=cfg.persistent_workers,
                      multiprocessing_context=multiprocessing_context)
    return kwargs


def build_loader(cache: Path | str, split: str, cfg: LoaderConfig, *, shuffle: bool = True,
                 num_replicas: int = 1, rank: int = 0, multiprocessing_context: str | None = None,
                 dataset: Dataset | None = None, subjects: list[str] | None = None) -> DataLoader:
    """A DataLoader over `split` of the cache.

    shuffle=True (training): `ClassAwareSampler` with cfg.oversample_fraction and cfg.seed, call
    `loader.sampler.set_epoch(epoch)` each epoch; with num_replicas/rank, this rank's disjoint, equal-length share.
    shuffle=False (evaluation): every slice once, in order; with num_replicas > 1, slices rank, rank + R, ...
    (no padding, so shares may differ by one). `dataset`: a prepared SliceDataset (anything with `present`).
    multiprocessing_context: "fork", "spawn" or "forkserver" (None: the platform's default). `subjects`: these
    subjects instead of the split's (a cross-validation fold's part).
    """
    cfg.validate()  # (with workers=0 this process reads: the dataset decodes single-threaded, as a worker does)
    dataset = dataset if dataset is not None else SliceDataset(cache, split, cfg.context_slices, subjects)
    if shuffle:
        sampler = ClassAwareSampler(dataset.present, cfg.batch_size, cfg.oversample_fraction, cfg.seed,
                                    num_replicas=num_replicas, rank=rank)
    elif num_replicas > 1:
        sampler = range(rank, len(dataset), num_replicas)
    else:
        sampler = SequentialSampler(dataset)
    generator = torch.Generator().manual_seed(cfg.seed)  # worker seeds follow from it: reproducible workers
    if multiprocessing_context is None and not getattr(getattr(dataset, "reader", None), "fork_safe", True):
        multiprocessing_context = "spawn"  # the object-store client's runtime does not survive a fork (reader.py)
    return RingLoader(dataset, sampler=sampler, generator=generator, **loader_kwargs(cfg, multiprocessing_context))


def original_worker_error(error: BaseException) -> BaseException | None:
    """The CtsliceError that a DataLoader worker raised, as its own one-line message, from the exception torch
    re-raises in the main process ("Caught CacheError in DataLoader worker process 0. Original Traceback ...",
    of the original type when that takes one argument, else a RuntimeError); None for anything else."""
    from ..errors import CtsliceError

    text = str(error)
    if not text.startswith("Caught ") or "DataLoader worker process" not in text.split("\n", 1)[0]:
        return None
    kind = text.split(" ", 2)[1]
    if not (isinstance(error, CtsliceError) or kind in _ctslice_error_names()):
        return None
    last = text.rstrip().rsplit("\n", 1)[-1]  # "ctslice.errors.CacheError: <the original message>"
    _, sep, message = last.partition(": ")
    if not sep:
        return None
    original = CtsliceError.__new__(type(error) if isinstance(error, CtsliceError) else CtsliceError)
    Exception.__init__(original, message)  # not cls(message): InputError's constructor takes three arguments
    return original


def _ctslice_error_names() -> set[str]:
    from .. import errors

    return {name for name, value in vars(errors).items()
            if isinstance(value, type) and issubclass(value, errors.CtsliceError)}


@contextmanager
def worker_errors() -> Iterator[None]:
    """Around iterating a DataLoader: a CtsliceError from a worker process reaches the caller (and the CLI's
    one-line `error:`) as the original error, not wrapped in torch's worker traceback.

        with worker_errors():
            for batch in loader: ...
    """
    try:
        yield
    except Exception as e:
        original = original_worker_error(e)
        if original is None:
            raise
        raise original from None

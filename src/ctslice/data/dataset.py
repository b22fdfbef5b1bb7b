"""`SliceDataset`: the slices of one split of the cache, as torch tensors in their stored dtypes.

    ds = SliceDataset("cache", split="train", context_slices=3)
    item = ds[0]   # {"image": int16 (3, H, W), "label": uint8 (H, W), "subject": int, "slice": int}

Items stay int16/uint8 (1.5 bytes a pixel against 4 for float32), so workers pass less through shared memory and the
host-to-device copy is smaller; intensity windowing and augmentation run later on the batch, on the training
device (`transforms.apply_intensity`, `train/augment.py`). The split, label map and geometry come from the manifest
only.

A DataLoader fetches a whole batch with one `__getitems__` call (`CacheReader.read_batch`): the slices are decoded
straight into one batch buffer (inside a worker, a reused shared-memory slot of the loader's ring, `ring.py`) and
`collate_slices` hands that buffer on without stacking, so every pixel is written once. Against per-item arrays stacked by default_collate this measured 1.6-1.9x faster in one
process (`ctslice bench loader --alternatives`) and ~1.2x with 1-2 workers (2-core VM, 512x512 slices). Plain
indexing and default_collate still work: the items are ordinary tensors (views of the batch).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from ..cache.reader import CacheReader
from ..errors import CacheError
from .ring import BatchRing, RingBatch, shared_empty


_blosc = threading.Lock()
_blosc_users = 0
_blosc_saved: object = None


@contextmanager
def single_threaded_blosc() -> Iterator[None]:
    """Decode with one Blosc thread inside the block, then give the process its own setting back. numcodecs lets
    Blosc start its own threads when called from a process's main thread: true in a spawned or forkserver worker
    and in the training process, false in a forked worker. For lz4 slices those threads cost more than they gain
    (one process: ~2,800-3,300 against ~3,300-4,200 pairs/s with `ctslice bench loader --alternatives` on 2 cores),
    and workers are already one per core. numcodecs has one switch for the whole process, so the block sets it and
    restores it (nested and from several threads: the outermost block restores it), instead of flipping it for a
    caller that imported the library."""
    import numcodecs.blosc

    global _blosc_users, _blosc_saved
    with _blosc:
        if _blosc_users == 0:
            _blosc_saved = numcodecs.blosc.use_threads
            numcodecs.blosc.use_threads = False
        _blosc_users += 1
    try:
        yield
    finally:
        with _blosc:
            _blosc_users -= 1
            if _blosc_users == 0:
                numcodecs.blosc.use_threads = _blosc_saved


def split_rows(reader: CacheReader, split: str, subjects: list[str] | None = None) -> np.ndarray:
    """Slice-index rows of the subjects of `split` (or of `subjects`, a cross-validation fold's, named `split`),
    in slice-index order (subjects sorted, then slices)."""
    splits = reader.manifest.splits
    if subjects is None and split not in splits:
        raise CacheError(f"{reader.cache}: no split {split!r} in the manifest (it has {', '.join(sorted(splits))})")
    wanted = set(splits[split] if subjects is None else subjects)
    unknown = sorted(wanted - set(reader.subjects))
    if unknown:
        raise CacheError(f"{reader.cache}: split {split!r} names subjects that are not cached ({', '.join(unknown)}); "
                         f"run `ctslice cache verify`")
    parts = [np.arange(reader.offsets[s], reader.offsets[s + 1]) for s, sid in enumerate(reader.subjects)
             if sid in wanted]
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


def context_window(z: int, k: int, slices: int) -> list[int]:
    """The k slice numbers centred on z, clamped to [0, slices): edges repeat the first or last slice."""
    half = k // 2
    return [min(max(z + d, 0), slices - 1) for d in range(-half, half + 1)]


class SliceBatch(Sequence):
    """The items of one `__getitems__` call: a sequence of item dicts, made only when asked for, over one filled
    batch buffer. `collate_slices` takes the buffer itself (`collated`), so a batch costs no per-item work."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, subjects: list[int], slices: list[int],
                 token: tuple | None = None):
        self.images, self.labels, self.subjects, self.slices, self.token = images, labels, subjects, slices, token

    def __len__(self) -> int:
        return len(self.subjects)

    def __getitem__(self, j):
        if isinstance(j, slice):
            return [self[i] for i in range(*j.indices(len(self)))]
        return {"image": self.images[j], "label": self.labels[j], "subject": self.subjects[j], "slice": self.slices[j]}

    def collated(self) -> dict | RingBatch:
        """The batch: {"image", "label", "subject", "slice"} as default_collate would make it from the items (int64
        subject and slice tensors); in a ring slot, the token that stands for it (`ring.RingBatch`)."""
        if self.token is not None:
            return RingBatch(self.token, self.subjects, self.slices)
        return {"image": self.images, "label": self.labels, "subject": torch.tensor(self.subjects),
                "slice": torch.tensor(self.slices)}


def batch_buffers(ring: BatchRing | None, batch: int, image_shape: tuple[int, ...], label_shape: tuple[int, ...]
                  ) -> tuple[torch.Tensor, torch.Tensor, tuple | None]:
    """(images int16, labels uint8, ring token or None) to decode a batch into: a free slot of the worker's ring
    when there is one, else new uninitialised buffers. In a DataLoader worker those live in shared memory from the
    start, as default_collate makes them, so sending them to the main process copies nothing (`share_memory_()`
    would copy); workers of a `RingLoader` need them only when no ring slot is free (`ring.BatchRing.take`)."""
    slot = ring.take(batch) if ring is not None else None
    if slot is not None:
        return slot
    new = torch.empty if get_worker_info() is None else shared_empty  # (asked once: ~1 us a call)
    return new((batch, *image_shape), dtype=torch.int16), new((batch, *label_shape), dtype=torch.uint8), None


class SliceDataset(Dataset):
    """One item per cached slice of `split` (or of `subjects`: a cross-validation fold's train or val part). Indices
    follow the slice index (subject order, then slice)."""

    def __init__(self, cache: Path | str, split: str = "train", context_slices: int = 1,
                 subjects: list[str] | None = None):
        if context_slices < 1 or context_slices % 2 == 0:
            raise ValueError(f"context_slices must be odd and >= 1, got {context_slices}")
        self.reader = CacheReader(cache)
        self.split = split
        self.context_slices = context_slices
        self.rows = split_rows(self.reader, split, subjects)
        """Slice-index row of each item."""
        sizes = np.unique(self.reader.shapes[np.unique(self.locate_many(np.arange(len(self)))[0]), 1:], axis=0)
        self.slice_size: tuple[int, int] | None = tuple(sizes[0].tolist()) if len(sizes) == 1 else None
        """(H, W) of every item; None when the subjects differ in slice size (a cache not made by preprocess)."""

    ring: BatchRing | None = None
    """Set by `loader.RingLoader` before its workers start: the buffers they decode batches into."""

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def present(self) -> np.ndarray:
        """(items, labels) bool: which labels occur in each item's (centre) slice, for class-aware sampling."""
        return self.reader.index.present[self.rows]

    @property
    def labels(self) -> dict[int, str]:
        return self.reader.manifest.labels

    def locate(self, i: int) -> tuple[int, int]:
        """(subject number, slice) of item i."""
        if not -len(self) <= i < len(self):
            raise IndexError(f"item {i} out of range ({self.split} has {len(self)} slices)")
        return self.reader.locate(int(self.rows[i]))

    def locate_many(self, indices) -> tuple[np.ndarray, np.ndarray]:
        """(subject numbers, slices) of many items at once."""
        items = np.asarray(indices, dtype=np.int64)
        try:
            rows = self.rows[items]  # numpy's own bounds check ([-len, len)): no extra pass over the items
        except IndexError:
            outside = np.flatnonzero((items < -len(self)) | (items >= len(self)))
            raise IndexError(f"item {items[outside[0]]} out of range ({self.split} has {len(self)} slices)") from None
        subjects = np.searchsorted(self.reader.offsets, rows, side="right") - 1
        return subjects, rows - self.reader.offsets[subjects]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor | int]:
        return self.__getitems__([i])[0]

    def __getitems__(self, indices: list[int]) -> SliceBatch | list[dict[str, torch.Tensor | int]]:
        if not len(indices):
            return []
        subjects, zs = self.locate_many(indices)
        if self.slice_size is not None:  # known once for the split: no per-batch check
            h, w = self.slice_size
        else:
            sizes = self.reader.shapes[subjects, 1:]
            if (sizes != sizes[0]).any():  # subjects of different slice sizes: one buffer each
                return [item for i in indices for item in self.__getitems__([i])]
            h, w = sizes[0].tolist()
        images, labels, token = batch_buffers(self.ring, len(indices), (self.context_slices, h, w), (h, w))
        try:
            with single_threaded_blosc():  # as in a worker, and the caller's own setting back afterwards
                self.reader.read_batch(subjects, zs, self.context_slices, images.numpy(), labels.numpy())
        except BaseException:
            if token is not None:
                self.ring.give_back(token)
            raise
        return SliceBatch(images, labels, subjects.tolist(), zs.tolist(), token)

    def make_ring(self, workers: int, slots: int, batch_size: int) -> BatchRing | None:
        """Reused batch buffers for `workers` DataLoader workers (`ring.py`), or None when the split's subjects
        differ in slice size (batches then get buffers of their own size)."""
        if self.slice_size is None:
            return None
        h, w = self.slice_size
        return BatchRing(workers, slots, batch_size, (self.context_slices, h, w), (h, w))

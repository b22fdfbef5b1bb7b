"""`SliceDataset`: the slices of one split of the cache, as torch tensors in their stored dtypes.

    ds = SliceDataset("cache", split="train", context_slices=3)
    item = ds[0]   # {"image": int16 (3, H, W), "label": uint8 (H, W), "subject": int, "slice": int}

Items stay int16/uint8 (1.5 bytes a pixel against 4 for float32), so workers pass less through shared memory and the
host-to-device copy is smaller; intensity windowing and augmentation run later on the batch, on the training
device (`transforms.apply_intensity`, `train/augment.py`). The split, label map and geometry come from the manifest
only.

A DataLoader fetches a whole batch with one `__getitems__` call: the slices are decoded straight into one batch
buffer (in shared memory inside a worker) and `collate_slices` hands that buffer on without stacking, so every
pixel is written once. Against per-item arrays stacked by default_collate this measured 1.6-1.9x faster in one
process (`ctslice bench loader --alternatives`) and ~1.2x with 1-2 workers (2-core VM, 512x512 slices). Plain
indexing and default_collate still work: the items are ordinary tensors (views of the batch).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from ..cache.reader import CacheReader
from ..errors import CacheError


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


def empty_batch(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised tensor for a batch; in a DataLoader worker it lives in shared memory from the start, as
    default_collate does it, so sending it to the main process copies nothing (`share_memory_()` would copy)."""
    if get_worker_info() is None:
        return torch.empty(shape, dtype=dtype)
    proto = torch.empty(0, dtype=dtype)
    try:
        storage = proto._typed_storage()._new_shared(math.prod(shape))  # torch's own route (default_collate)
    except AttributeError:  # a torch without it: correct, one copy more
        return torch.empty(shape, dtype=dtype).share_memory_()
    return proto.new(storage).view(shape)


def batch_items(images: torch.Tensor, labels: torch.Tensor, where: list[tuple[int, int]]) -> list[dict]:
    """Per-item views of a filled batch: what `__getitems__` returns (see `loader.collate_slices`)."""
    return [{"image": images[j], "label": labels[j], "subject": s, "slice": z} for j, (s, z) in enumerate(where)]


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

    def __getitem__(self, i: int) -> dict[str, torch.Tensor | int]:
        return self.__getitems__([i])[0]

    def __getitems__(self, indices: list[int]) -> list[dict[str, torch.Tensor | int]]:
        if not indices:
            return []
        where = [self.locate(i) for i in indices]
        shapes = {tuple(self.reader.shapes[s, 1:]) for s, _ in where}
        if len(shapes) > 1:  # subjects of different slice sizes (not made by preprocess): one buffer each
            return [item for i in indices for item in self.__getitems__([i])]
        h, w = shapes.pop()
        images = empty_batch((len(indices), self.context_slices, h, w), torch.int16)
        labels = empty_batch((len(indices), h, w), torch.uint8)
        with single_threaded_blosc():  # as in a worker, and the caller's own setting back afterwards
            self._fill(images.numpy(), labels.numpy(), where, range(len(where)))
        return batch_items(images, labels, where)

    def _fill(self, image_out: np.ndarray, label_out: np.ndarray, where: list[tuple[int, int]], rows) -> None:
        """Decode the slices of `where[j]` into row j of the batch arrays, for j in `rows`."""
        for j in rows:
            s, z = where[j]
            window = context_window(z, self.context_slices, int(self.reader.shapes[s, 0]))
            self.reader.read_image(s, window, out=image_out[j])
            self.reader.read_label(s, z, out=label_out[j])

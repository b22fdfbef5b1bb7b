"""The alternatives behind the reader's design (`ctslice bench loader --alternatives`): other ways to read the
same slices in one process, timed best of 3. The numbers are quoted in cache/reader.py and data/dataset.py."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..data.dataset import SliceBatch, SliceDataset, single_threaded_blosc


class _ThreadedSliceDataset(SliceDataset):
    """Alternative: the rows of a batch decoded by a thread pool inside the process (one pool per process;
    the reader keeps one read buffer per thread)."""

    threads = 2

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_pool"}

    def __getitems__(self, indices: list[int]) -> SliceBatch:
        from concurrent.futures import ThreadPoolExecutor

        if "_pool" not in self.__dict__:
            self._pool = ThreadPoolExecutor(self.threads)
        subjects, zs = self.locate_many(indices)
        h, w = self.reader.shapes[subjects[0], 1:].tolist()
        images = torch.empty((len(indices), self.context_slices, h, w), dtype=torch.int16)
        labels = torch.empty((len(indices), h, w), dtype=torch.uint8)
        image_out, label_out = images.numpy(), labels.numpy()
        bounds = np.linspace(0, len(indices), self.threads + 1).astype(int)  # consecutive rows: views, not copies
        with single_threaded_blosc():
            list(self._pool.map(lambda a, b: self.reader.read_batch(
                subjects[a:b], zs[a:b], self.context_slices, image_out[a:b], label_out[a:b]), bounds[:-1], bounds[1:]))
        return SliceBatch(images, labels, subjects.tolist(), zs.tolist())


def _rate(fn: Callable[[], int], rounds: int = 3) -> float:
    """Best of `rounds` (pairs / seconds): the least disturbed run on a shared machine."""
    best = 0.0
    for _ in range(rounds):
        start = time.perf_counter()
        pairs = fn()
        best = max(best, pairs / (time.perf_counter() - start))
    return best


def measure_alternatives(cache: Path, split: str = "train", samples: int = 400, batch_size: int = 16,
                         seed: int = 0) -> list[dict]:
    """Pairs/s of other ways to read the same slices, one process, for the choices in cache/reader.py and
    data/dataset.py. Each row: {"name", "pairs_per_s"}."""
    import numcodecs.blosc
    from torch.utils.data import default_collate

    from ..cache import store

    ds = SliceDataset(cache, split)
    reader = ds.reader
    order = np.random.default_rng(seed).permutation(len(ds))[:samples].tolist()
    where = [ds.locate(i) for i in order]
    h, w = (int(v) for v in reader.shapes[0, 1:])
    folders = [reader.manifest.subjects[sid].path for sid in reader.subjects]
    groups: dict[int, tuple] = {}

    def zarr_python() -> int:
        for s, z in where:
            if s not in groups:
                group = store.open_subject(reader.cache, folders[s])
                groups[s] = (group["image"], group["label"])
            np.asarray(groups[s][0][z]), np.asarray(groups[s][1][z])
        return len(where)

    def read_bytes_copy() -> int:
        for s, z in where:
            for array, dtype in (("image", np.int16), ("label", np.uint8)):
                raw = store.chunk_path(reader.cache, folders[s], array, z).read_bytes()
                store.decode_chunk(raw, np.dtype(dtype), (h, w), "x").copy()
        return len(where)

    def os_call(call: str) -> Callable[[], int]:
        def run() -> int:
            for s, z in where:
                for array, dtype in (("image", np.int16), ("label", np.uint8)):
                    out = np.empty((h, w), dtype)
                    fd = os.open(str(store.chunk_path(reader.cache, folders[s], array, z)), os.O_RDONLY)
                    try:
                        size = out.nbytes + 4096
                        raw = os.read(fd, size) if call == "read" else os.pread(fd, size, 0)
                    finally:
                        os.close(fd)
                    store.decode_chunk(raw, out.dtype, out.shape, "x", out=out)
            return len(where)
        return run

    def reader_rows() -> int:
        for s, z in where:
            reader.read_image(s, [z], out=np.empty((1, h, w), np.int16))
            reader.read_label(s, z, out=np.empty((h, w), np.uint8))
        return len(where)

    def items() -> int:
        for i in order:
            ds[i]
        return len(order)

    def batches(dataset: Dataset, stacked: bool) -> Callable[[], int]:
        def run() -> int:
            for b in range(0, len(order), batch_size):
                chunk = order[b:b + batch_size]
                default_collate([dataset[i] for i in chunk]) if stacked else dataset.__getitems__(chunk)
            return len(order)
        return run

    threaded = _ThreadedSliceDataset(cache, split)
    saved = numcodecs.blosc.use_threads
    rows = []
    try:
        numcodecs.blosc.use_threads = False
        for name, fn in (("zarr-python array indexing, per slice", zarr_python),
                         ("Path.read_bytes + decode_chunk + copy", read_bytes_copy),
                         ("os.open + os.read (new bytes) + decode into array", os_call("read")),
                         ("os.open + os.pread (new bytes) + decode into array", os_call("pread")),
                         ("reader: os.readv into reused buffer (chosen)", reader_rows),
                         ("dataset item (reader + tensors)", items),
                         ("batch of 16: items + default_collate stack", batches(ds, stacked=True)),
                         ("batch of 16: __getitems__ into one buffer (chosen)", batches(ds, stacked=False)),
                         (f"batch of 16: __getitems__, {threaded.threads} threads", batches(threaded, stacked=False))):
            rows.append({"name": name, "pairs_per_s": _rate(fn)})
        numcodecs.blosc.use_threads = True
        rows.append({"name": "reader + Blosc internal threads", "pairs_per_s": _rate(reader_rows)})
    finally:
        numcodecs.blosc.use_threads = saved
    return rows



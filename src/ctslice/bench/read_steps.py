"""Where a pair's time goes (`ctslice bench loader --steps`): each step of the reader timed alone, in CPU
microseconds a pair, best of `rounds` passes over the same random slices, in one process.

The steps are those of `CacheReader.read_batch` for one (image, label) pair: open + readv + close of each chunk
file into the reused read buffer, the crc32c over the stored bytes, the Blosc decode into a row of a batch
buffer, and the Python around them (timed with the file and decode work replaced by nothing). The .npy ceiling's
work per pair (copying a pair out of the memmaps into a batch buffer) is timed the same way beside them.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import google_crc32c
import numcodecs.blosc
import numpy as np

from ..cache import store
from ..cache.reader import _read_file
from ..data.dataset import SliceDataset


def _best_us(fn: Callable[[], int], rounds: int) -> float:
    """CPU microseconds per pair of the least disturbed of `rounds` runs of fn (which returns its pairs)."""
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        pairs = fn()
        best = min(best, (time.process_time() - start) / pairs)
    return best * 1e6


def measure_steps(ds: SliceDataset, npy=None, samples: int = 256, batch_size: int = 16, rounds: int = 5,
                  seed: int = 0) -> list[dict]:
    """[{"step", "us_per_pair"}] for the dataset's reader (k = 1 windows), and the .npy dataset's copy if given."""
    reader = ds.reader
    order = np.random.default_rng(seed).permutation(len(ds))[:samples].tolist()
    subjects, zs = ds.locate_many(order)
    h, w = ds.slice_size or reader.shapes[0, 1:].tolist()
    folders = [reader.manifest.subjects[sid].path for sid in reader.subjects]
    paths = {array: [str(store.chunk_path(reader.cache, folders[s], array, z)) for s, z in zip(subjects, zs)]
             for array in ("image", "label")}
    buf = bytearray(h * w * 2 + 4096)
    stored = {array: [bytes(_read_file(p, buf, "")) for p in paths[array]] for array in paths}
    rows = {"image": np.empty((batch_size, h, w), np.int16), "label": np.empty((batch_size, h, w), np.uint8)}

    def read(array: str) -> Callable[[], int]:
        return lambda: sum(1 for p in paths[array] if _read_file(p, buf, "") is not None)

    def crc(array: str) -> Callable[[], int]:
        return lambda: sum(1 for raw in stored[array] if google_crc32c.value(raw) is not None)

    def decode(array: str) -> Callable[[], int]:
        out = rows[array]

        def run() -> int:
            for j, raw in enumerate(stored[array]):
                numcodecs.blosc.decompress(memoryview(raw)[:-4], out[j % batch_size])
            return len(order)
        return run

    def items() -> int:
        for i in order:
            ds[i]
        return len(order)

    def batches(dataset) -> Callable[[], int]:
        def run() -> int:
            for b in range(0, len(order) - batch_size + 1, batch_size):
                dataset.__getitems__(order[b:b + batch_size])
            return len(order) // batch_size * batch_size
        return run

    steps = [("open + readv + close: image chunk", read("image")), ("open + readv + close: label chunk", read("label")),
             ("crc32c over the stored bytes: image", crc("image")), ("crc32c over the stored bytes: label", crc("label")),
             ("Blosc decode into a batch row: image", decode("image")),
             ("Blosc decode into a batch row: label", decode("label"))]
    result = [{"step": name, "us_per_pair": _best_us(fn, rounds)} for name, fn in steps]
    result.append({"step": "sum of the steps above", "us_per_pair": sum(r["us_per_pair"] for r in result)})
    result.append({"step": f"whole dataset, batches of {batch_size} (__getitems__)",
                   "us_per_pair": _best_us(batches(ds), rounds)})
    result.append({"step": "whole dataset, one item at a time (indexing)", "us_per_pair": _best_us(items, rounds)})
    if not callable(getattr(type(reader), "_chunk_into", None)):  # what the stub below replaces
        raise RuntimeError("CacheReader has no _chunk_into: update bench/read_steps.py")
    reader._chunk_into = lambda *args: None  # the Python alone: no file, crc or decode work (instance only)
    try:
        result.append({"step": f"Python around them, batches of {batch_size}", "us_per_pair": _best_us(batches(ds), rounds)})
        result.append({"step": "Python around them, one item at a time", "us_per_pair": _best_us(items, rounds)})
    finally:
        del reader._chunk_into
    if npy is not None:
        result.append({"step": f".npy ceiling: batches of {batch_size}", "us_per_pair": _best_us(batches(npy), rounds)})
        result.append({"step": ".npy ceiling: one item at a time", "us_per_pair": _best_us(lambda: sum(
            1 for i in order if npy[i] is not None), rounds)})
    return result

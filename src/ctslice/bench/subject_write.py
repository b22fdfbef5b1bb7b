"""How long writing one subject's arrays takes: through zarr (`array[...] = data`, what store.write_subject did
before) against the direct chunk writer (cache/encode.py), in both layouts, with and without encoding threads.
Every way writes the same files byte for byte (tests/test_shards.py), so only the time differs."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import zarr

from ..cache import store
from ..cache.manifest import read_manifest

_SLICED = {"image": store.IMAGE_CODECS, "label": store.LABEL_CODECS}


def write_with_zarr(folder: Path, arrays: dict[str, np.ndarray], record: dict, sharded: bool) -> None:
    """A subject group as zarr itself writes it (array[...] = data): the reference the direct writer matches."""
    group = zarr.open_group(zarr.storage.LocalStore(folder), mode="w", attributes={"ctslice": "subject",
                                                                                   "record": record})
    for name, data in arrays.items():
        sliced = name in _SLICED
        array = group.create_array(name, shape=data.shape, dtype=data.dtype,
                                   chunks=(1, *data.shape[1:]) if sliced else data.shape,
                                   shards=data.shape if sliced and sharded else None,
                                   compressors=_SLICED.get(name, store.SMALL_CODECS),
                                   config={"write_empty_chunks": True})
        array[...] = data


def subject_arrays(cache: Path) -> dict[str, np.ndarray]:
    """The arrays of a cache's largest subject, in write_subject's order."""
    manifest = read_manifest(cache)
    record = max(manifest.subjects.values(), key=lambda r: np.prod(r.shape))
    group = store.open_subject(cache, record.path)
    return {name: np.asarray(group[name][...]) for name in ("image", "label", "foreground", "present",
                                                             store.HISTOGRAM)}


def measure_subject_write(arrays: dict[str, np.ndarray], out: Path, repeats: int = 3) -> dict:
    """Best-of-`repeats` seconds per way of writing `arrays` (interleaved, so load changes hit every way alike),
    and each way's time relative to zarr's ("slices" layout)."""
    out = Path(out)
    folder = "subjects/bench-0000000000000000"

    def direct(sharded: bool, threads: int):
        a = arrays
        return lambda: store.write_subject(out, folder, a["image"], a["label"], a["foreground"], a["present"], {},
                                           a[store.HISTOGRAM], sharded=sharded, threads=threads)

    ways = {"zarr, slices (before)": lambda: write_with_zarr(out / folder, arrays, {}, False),
            "zarr, shards": lambda: write_with_zarr(out / folder, arrays, {}, True),
            "direct, slices": direct(False, 1), "direct, slices, 2 threads": direct(False, 2),
            "direct, shards": direct(True, 1), "direct, shards, 2 threads": direct(True, 2)}
    best = {name: float("inf") for name in ways}
    for _ in range(repeats):
        for name, write in ways.items():
            shutil.rmtree(out, ignore_errors=True)
            start = time.perf_counter()
            write()
            best[name] = min(best[name], time.perf_counter() - start)
    shutil.rmtree(out, ignore_errors=True)
    base = best["zarr, slices (before)"]
    return {"slices": int(arrays["image"].shape[0]), "shape": list(arrays["image"].shape),
            "seconds": best, "vs_zarr": {name: s / base for name, s in best.items()}}

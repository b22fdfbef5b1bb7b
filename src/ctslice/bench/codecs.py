"""Which Blosc codec for the slice chunks: compressed size against decode speed, on real cached slices.
Decoding here allocates its output, as zarr does; the loader decodes into its batch buffer, a little faster."""

from __future__ import annotations

import time
from pathlib import Path

import numcodecs
import numpy as np

from ..cache import store
from ..cache.manifest import read_manifest

CANDIDATES = [
    ("lz4", 0, numcodecs.Blosc.NOSHUFFLE),  # clevel 0: stored uncompressed (decoding is a copy)
    ("lz4", 1, numcodecs.Blosc.SHUFFLE),
    ("lz4", 5, numcodecs.Blosc.SHUFFLE),
    ("lz4", 9, numcodecs.Blosc.SHUFFLE),
    ("lz4hc", 5, numcodecs.Blosc.SHUFFLE),  # slower to write, as fast to read as lz4
    ("lz4", 5, numcodecs.Blosc.BITSHUFFLE),
    ("zstd", 1, numcodecs.Blosc.SHUFFLE),
    ("zstd", 1, numcodecs.Blosc.BITSHUFFLE),
    ("zstd", 3, numcodecs.Blosc.SHUFFLE),
    ("zstd", 5, numcodecs.Blosc.SHUFFLE),
    ("blosclz", 5, numcodecs.Blosc.SHUFFLE),
]


def _sample_slices(cache: Path, limit: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    manifest = read_manifest(cache)
    images, labels = [], []
    for record in manifest.subjects.values():
        group = store.open_subject(cache, record.path)
        step = max(1, record.slices // 8)
        images += list(np.asarray(group["image"][::step]))
        labels += list(np.asarray(group["label"][::step]))
        if len(images) >= limit:
            break
    return images[:limit], labels[:limit]


def measure_codecs(cache: Path, slices: int = 64, repeat: int = 3) -> list[dict]:
    """For each candidate: compression ratio of image and label slices and single-thread decode MB/s."""
    images, labels = _sample_slices(cache, slices)
    numcodecs.blosc.set_nthreads(1)  # a DataLoader worker decodes on one core
    rows = []
    for cname, clevel, shuffle in CANDIDATES:
        row = {"codec": f"{cname} clevel {clevel} {('noshuffle', 'shuffle', 'bitshuffle')[shuffle]}"}
        for kind, arrays in (("image", images), ("label", labels)):
            codec = numcodecs.Blosc(cname=cname, clevel=clevel, shuffle=shuffle)
            t0 = time.perf_counter()
            encoded = [codec.encode(a) for a in arrays]
            encode_s = time.perf_counter() - t0
            raw = sum(a.nbytes for a in arrays)
            t0 = time.perf_counter()
            for _ in range(repeat):
                for e in encoded:
                    codec.decode(e)
            decode_s = (time.perf_counter() - t0) / repeat
            row[f"{kind}_ratio"] = raw / sum(len(e) for e in encoded)
            row[f"{kind}_decode_us"] = decode_s / len(arrays) * 1e6
            row[f"{kind}_decode_MBps"] = raw / decode_s / 1e6
            row[f"{kind}_encode_MBps"] = raw / encode_s / 1e6
        rows.append(row)
    return rows

"""Chunks encoded as zarr's codec pipeline encodes them, without going through zarr (store.write_subject).

zarr writes an array through its async codec pipeline, a few hundred microseconds of Python per chunk; the
arrays of a cache are a few fixed pipelines (bytes little-endian -> Blosc -> crc32c), so the chunks are encoded
here with the same numcodecs Blosc call and the same crc32c, byte for byte what zarr writes (tests/test_shards.py
compares the files), and zarr itself still writes each array's zarr.json.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import google_crc32c
import numcodecs.blosc
import numpy as np
from zarr.codecs import BloscCodec, Crc32cCodec

_SHUFFLE = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}


def encode_chunk(data: np.ndarray, codecs: tuple[BloscCodec, Crc32cCodec]) -> bytes:
    """One chunk's bytes: C-order little-endian data, Blosc-compressed as zarr's BloscCodec does (its typesize
    is the dtype's item size), then the little-endian crc32c of the compressed bytes appended."""
    blosc, _ = codecs
    data = np.ascontiguousarray(data, dtype=data.dtype.newbyteorder("<"))
    compressed = numcodecs.blosc.compress(data, blosc.cname.value.encode(), blosc.clevel,
                                          _SHUFFLE[blosc.shuffle.value], blosc.blocksize, data.dtype.itemsize)
    return compressed + google_crc32c.value(compressed).to_bytes(4, "little")


def encode_slices(data: np.ndarray, codecs: tuple[BloscCodec, Crc32cCodec], threads: int = 1) -> list[bytes]:
    """Each slice data[z] as one chunk (chunks (1, H, W)), in slice order. With threads > 1 the slices are encoded
    by that many threads (Blosc and crc32c release the GIL); Blosc's own threads stay as they are."""
    if threads <= 1 or len(data) < 2:
        return [encode_chunk(plane, codecs) for plane in data]
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda plane: encode_chunk(plane, codecs), data))

"""The "shards" layout: one zarr v3 shard file per array of a subject, its slices as the inner chunks.

    subjects/<id>-<key>/image/c/0/0/0    [chunk 0][chunk 1]...[chunk S-1][index][crc32c of the index]

This is zarr's sharding codec ("sharding_indexed", index at the end), so plain zarr reads these arrays; each
inner chunk is encoded exactly as a slice chunk file of the "slices" layout (Blosc, then its own crc32c), and the
index is S pairs (offset, nbytes) of little-endian uint64, in slice order, followed by its crc32c (the zarr v3
sharding spec with index_codecs bytes + crc32c; 2^64-1 pairs mark an empty chunk, which ctslice never writes).

Reading a slice without zarr: parse the index once per open file (`ShardFiles`), then one pread of the slice's
byte range into the caller's buffer, checked and decoded by store.decode_chunk as a chunk file would be.
"""

from __future__ import annotations

import json
import os
import stat
import threading
from collections import OrderedDict
from pathlib import Path

import google_crc32c
import numpy as np

from ..errors import CacheError
from . import layout

_ENTRY = 16  # (offset, nbytes) uint64
_CRC = 4
_EMPTY = 2**64 - 1
_INDEX_DTYPE = np.dtype("<u8")


def shard_path(folder: str | Path, array: str) -> str:
    """The shard file of `array` in a subject folder (its one chunk of the outer grid)."""
    return f"{folder}/{layout.chunk_key(array, 0, 0, 0)}"


def index_size(chunks: int) -> int:
    return chunks * _ENTRY + _CRC


def pack(chunks: list[bytes]) -> bytes:
    """A shard file's bytes from its encoded inner chunks in order, as zarr writes it (index at the end)."""
    sizes = np.array([len(c) for c in chunks], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]) if len(chunks) else sizes
    index = np.stack([offsets, sizes], axis=1).astype(_INDEX_DTYPE).tobytes()
    return b"".join([*chunks, index, google_crc32c.value(index).to_bytes(4, "little")])


def parse_index(tail: bytes, chunks: int, file_size: int) -> tuple[list[int], list[int]]:
    """(offsets, nbytes) of each inner chunk from a shard file's last index_size(chunks) bytes. CacheError (its
    message starting ': ', for the caller's `where` in front) when the index is damaged or does not account for
    the file: every chunk present, in the data part, and nothing else in the file."""
    size = index_size(chunks)
    if len(tail) != size:
        raise CacheError(f": shard file is truncated ({file_size} bytes, its index alone takes {size})")
    index = tail[:-_CRC]
    if google_crc32c.value(index) != int.from_bytes(tail[-_CRC:], "little"):
        raise CacheError(": shard index checksum mismatch, the shard index is damaged")
    pairs = np.frombuffer(index, dtype=_INDEX_DTYPE).reshape(chunks, 2)
    empty = np.flatnonzero((pairs == _EMPTY).all(axis=1))
    if empty.size:
        raise CacheError(f": shard index has no chunk for slice {int(empty[0])}, the shard is damaged")
    data = file_size - size
    ends = pairs[:, 0] + pairs[:, 1]
    if chunks and (int(ends.max()) > data or int(pairs[:, 1].sum()) != data):
        raise CacheError(f": shard index does not account for the file's {data} data bytes, the shard is damaged")
    return pairs[:, 0].tolist(), pairs[:, 1].tolist()


def is_sharded(array_folder: Path, where: str) -> bool:
    """Does this array's zarr.json say it is sharded (the first codec is zarr's sharding codec)?"""
    try:
        meta = json.loads(layout.read_regular(Path(array_folder) / "zarr.json", 1 << 20, where))
        return meta["codecs"][0]["name"] == "sharding_indexed"
    except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
        raise CacheError(f"{where}: array metadata is missing or unreadable ({e})") from None


class ShardFiles:
    """Open shard files with their parsed indexes, the `keep` most recently used (an LRU of file descriptors):
    a training run reads a few subjects' slices at a time, so most reads are one pread of an open file.

    Safe with threads (a lock around the table; pread has no file position) and with DataLoader workers: pickled,
    it is a new empty table, and a forked child starts its own (it leaves its parent's descriptors alone)."""

    def __init__(self, keep: int = 32):
        self._keep = keep
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._open: OrderedDict[str, tuple[int, list[int], list[int]]] = OrderedDict()

    def __reduce__(self):
        return ShardFiles, (self._keep,)

    def index(self, path: str, chunks: int) -> tuple[int, list[int], list[int]]:
        """(descriptor, offsets, nbytes) of shard file `path` with `chunks` inner chunks, opened and its index
        parsed on first use. FileNotFoundError passes (the caller tells damage from an update); other problems
        are CacheErrors whose message starts with ': '."""
        if self._pid != os.getpid():
            self._reset()
        with self._lock:
            entry = self._open.get(path)
            if entry is not None:
                self._open.move_to_end(path)
                return entry
        entry = _open_shard(path, chunks)
        with self._lock:
            if path in self._open:  # another thread opened it meanwhile: keep one descriptor
                os.close(entry[0])
                return self._open[path]
            self._open[path] = entry
            while len(self._open) > self._keep:
                os.close(self._open.popitem(last=False)[1][0])
        return entry

    def read(self, path: str, z: int, chunks: int, buf: bytearray) -> np.ndarray:
        """Inner chunk z of shard file `path`, read into `buf`, as a read-only uint8 view of it (valid until the
        next read into `buf`); for store.decode_chunk. A chunk longer than `buf` is damage: the index was checked,
        so only a chunk that no valid slice can be is refused here (its checksum reports the rest)."""
        fd, offsets, sizes = self.index(path, chunks)
        n = sizes[z]
        if n > len(buf):
            raise CacheError(f": chunk of {n} bytes is longer than any valid slice chunk, the shard is damaged")
        view, got = memoryview(buf), 0
        try:
            while got < n:
                step = os.preadv(fd, [view[got:n]], offsets[z] + got)
                if step == 0:
                    raise CacheError(f": shard file {path} ends inside slice {z}'s chunk, the shard is damaged")
                got += step
        except OSError as e:
            raise CacheError(f": cannot read shard file {path} ({e.strerror})") from None
        raw = np.frombuffer(buf, dtype=np.uint8, count=n)
        raw.flags.writeable = False  # google_crc32c takes read-only buffers only
        return raw

    def close(self) -> None:
        if self._pid != os.getpid():
            return
        with self._lock:
            while self._open:
                os.close(self._open.popitem()[1][0])

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # at interpreter exit os may already be gone
            pass


def _open_shard(path: str, chunks: int) -> tuple[int, list[int], list[int]]:
    fd = layout.open_for_reading(path, "shard file")  # as chunk files: no FIFO hang, no link followed
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise CacheError(f": shard file {path} is not a regular file, the cache is damaged")
        size = index_size(chunks)
        tail = os.pread(fd, size, st.st_size - size) if st.st_size >= size else b""
        offsets, sizes = parse_index(tail, chunks, st.st_size)
    except OSError as e:
        os.close(fd)
        raise CacheError(f": cannot read shard file {path} ({e.strerror})") from None
    except CacheError:
        os.close(fd)
        raise
    return fd, offsets, sizes

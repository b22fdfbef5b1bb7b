"""`CacheReader`: one slice (image, label) at a time, straight from the chunk files, at close to the format's speed.

    reader = CacheReader("cache")
    image, label = reader.read("s0003", 12)      # int16 (H, W), uint8 (H, W)
    image, label = reader.read_at(1234)          # by row of the slice index (all subjects, manifest order)

How a slice is read, and why. Measured with `ctslice bench loader --alternatives` (512x512 demo slices, lz4, warm
page cache, one process on a shared 2-core VM, so +-20% between runs); pairs/s:

    zarr-python array indexing, per slice                    ~260   (~1 ms of Python per call, whatever the chunk)
    Path.read_bytes + decode_chunk + copy                   ~2,000-2,500
    os.open + os.read / os.pread (new bytes) + decode       ~3,500-4,100 once the allocator has adapted (below)
    this reader: os.readv into a reused buffer + decode     ~3,300-4,200
    the same with Blosc's internal threads                  ~2,800-3,300

- The reader never goes through zarr: slice z's chunk file is `store.chunk_path` (built here as a string), and
  `store.decode_chunk` checks its crc32c and Blosc-decompresses it exactly as zarr would.
- Files are read with os.open + os.readv + os.close: no FileIO/buffer objects, no fstat, no second read for EOF
  (Path.read_bytes: ~50 us a file against ~20). pread measured the same as read; readv is used because it fills
  an existing buffer. The buffer is reused (one per thread): a new bytes object per read is served by a fresh
  mmap until glibc's allocator raises its mmap threshold, and those page faults made a read cost 250 us instead
  of 40 us per file in a new process on this VM. A reused buffer does not depend on the allocator's history.
- Each slice is decompressed straight into the array that is returned (`decode_chunk(..., out=...)`): no extra
  copy of 0.5 MB per image. The checksum is taken over the whole chunk (store.py) for the same reason.
- No threads: decoding is CPU work and the DataLoader already runs one worker per core. Blosc's own threads were
  slower for lz4 slices, so the dataset turns them off while it reads (`data/dataset.py`). Two threads decoding a
  batch's rows in one process gained 5-30% on 2 cores (`--alternatives`), which workers give anyway.
- No file handles are kept: there is one chunk file per slice (millions), and open-read-close is what the numbers
  above include. In the "shards" layout (a cache built with `layout = "shards"`) a slice is a byte range of its
  array's shard file instead: `shards.ShardFiles` keeps the recently used shard files open with their parsed
  indexes, and a read is one pread into the same buffer (the one branch is in `_chunk_into`). The reader holds
  only plain data (paths, shapes, offsets) and pickles as such, so it is safe with fork, spawn and forkserver
  DataLoader workers; each process makes its own read buffer (and table of open shard files) on first use.
- The version it opened stays on disk while the reader lives: it holds a shared lock on that version's lease file
  (cache/lease.py), and preprocess runs delete no version a reader holds. Workers need no lock of their own: the
  process that built the reader holds it while it lives (forked workers inherit the descriptor). Call `close()`
  to let go earlier. If the version goes anyway (`cache clean`, a cache without lease files), a missing chunk of a
  version that is no longer the manifest's is said to be an update, never damage.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from ..errors import CacheError
from . import layout, shards, store
from .lease import Lease, VersionGone, take_lease, updated_message
from .manifest import Manifest, manifest_digest, read_manifest
from .mirror import remote_of

# A Blosc chunk is at most its raw size plus a 16-byte header, then the 4-byte crc32c; ask for a little more so a
# single read() returns the whole file, and a file longer than that is caught by the checksum.
_READ_SLACK = 4096
# Opening retries when the manifest changes between reading it and taking its lease (an update finished then).
_OPEN_TRIES = 5
# Chunk file of slice z, relative to its subject folder: `layout.chunk_key(array, z, 0, 0)` as a format string.
_IMAGE_KEY, _LABEL_KEY = (layout.chunk_key(array, "{}", 0, 0) for array in ("image", "label"))


class CacheReader:
    """Reads slices of a cache by (subject, slice) or by slice-index row. Errors name cache, subject and slice."""

    def __init__(self, cache: Path | str):
        self.cache = Path(cache)
        manifest, self._lease = _open_version(self.cache)
        if manifest.slice_index is None:
            raise CacheError(f"{self.cache}: the manifest names no slice index, so the cache was never completed "
                             f"(run `ctslice preprocess`)")
        index = store.read_slice_index(self.cache, manifest.slice_index)
        self.subjects: tuple[str, ...] = index.subjects
        """Subject ids in slice-index order: `subject` numbers below index into this."""
        missing = [sid for sid in self.subjects if sid not in manifest.subjects]
        if missing:
            raise CacheError(f"{self.cache}: the slice index names subjects the manifest lacks ({', '.join(missing)}); "
                             f"the cache is inconsistent (run `ctslice cache verify`)")
        table = manifest.subjects.table  # the rows: no record file is read
        records = [table[sid] for sid in self.subjects]
        self.shapes = np.array([r.shape for r in records], dtype=np.int64).reshape(-1, 3)
        """(slices, rows, columns) of each subject."""
        self.offsets = np.concatenate([[0], np.cumsum(self.shapes[:, 0])]).astype(np.int64)
        """Row of each subject's first slice in the slice index; offsets[-1] is the number of slices."""
        _check_index_layout(self.cache, index, self.offsets)
        self._folders = tuple(f"{self.cache}/{r.path}" for r in records)
        self._index_folder = manifest.slice_index
        self._version = _version(manifest)
        self._numbers = {sid: i for i, sid in enumerate(self.subjects)}
        self._remote = remote_of(self.cache)  # a mirror of an object store: subjects fetched on first use
        # "shards" layout: slices are byte ranges of one file per array (cache/shards.py), indexes parsed once
        self._shards = shards.ShardFiles() if manifest.settings.layout == "shards" else None
        # ... and their paths, built once: the read path then formats no string per slice for them
        self._shard_paths = {array: tuple(shards.shard_path(f, array) for f in self._folders)
                             for array in ("image", "label")} if self._shards is not None else {}
        # Plain data kept for the process that built the reader; dropped when pickled to a worker (see below).
        self._manifest: Manifest | None = manifest
        self._index: store.SliceIndex | None = index

    # --- Pickling: workers get paths and shapes only ------------------------------------------------------------

    def __getstate__(self) -> dict:
        # The manifest and slice index (present array: slices x labels) are only needed where the sampler is
        # built; leaving them out keeps what each spawned worker receives, and holds, independent of dataset size
        # beyond the per-subject table.
        state = {**self.__dict__, "_manifest": None, "_index": None, "_lease": None}  # the builder holds the lease
        state.pop("_local", None)  # per-thread read buffers: each process makes its own
        return state

    def close(self) -> None:
        """Let go of this reader's version (a later preprocess run may then delete it). Also at garbage collection."""
        if self._shards is not None:
            self._shards.close()
        if self._lease is not None:
            self._lease.close()
            self._lease = None

    @property
    def manifest(self) -> Manifest:
        if self._manifest is None:
            manifest = read_manifest(self.cache)
            if _version(manifest) != self._version:  # another version than the one this reader serves
                raise CacheError(updated_message(self.cache, "the manifest was replaced"))
            self._manifest = manifest
        return self._manifest

    @property
    def index(self) -> store.SliceIndex:
        if self._index is None:  # this reader's own index: kept on disk for a preprocess run after a newer one
            self._index = store.read_slice_index(self.cache, self._index_folder)
        return self._index

    # --- Addressing -----------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def subject_number(self, subject: int | str) -> int:
        """Position of a subject (id or number) in `subjects`."""
        if isinstance(subject, str):
            try:
                return self._numbers[subject]
            except KeyError:
                raise CacheError(f"{self.cache}: no subject {subject} in the cache") from None
        if not 0 <= subject < len(self.subjects):
            raise IndexError(f"subject number {subject} out of range (cache has {len(self.subjects)})")
        return int(subject)

    def locate(self, row: int) -> tuple[int, int]:
        """(subject number, slice) of a slice-index row."""
        if not 0 <= row < len(self):
            raise IndexError(f"slice row {row} out of range (cache has {len(self)} slices)")
        s = int(np.searchsorted(self.offsets, row, side="right")) - 1
        return s, int(row - self.offsets[s])

    # --- Reading --------------------------------------------------------------------------------------------------

    def read(self, subject: int | str, z: int) -> tuple[np.ndarray, np.ndarray]:
        """Slice z of a subject: (image int16 (H, W), label uint8 (H, W)), both fresh writable arrays."""
        s = self.subject_number(subject)
        return self.read_image(s, [z])[0], self.read_label(s, z)

    def read_at(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        return self.read(*self.locate(row))

    def read_image(self, subject: int | str, zs, out: np.ndarray | None = None) -> np.ndarray:
        """Image slices `zs` of a subject stacked as (len(zs), H, W) int16 (2.5D context: pass neighbours)."""
        s = self.subject_number(subject)
        _, h, w = self.shapes[s]
        if out is None:
            out = np.empty((len(zs), h, w), dtype=store.IMAGE_DTYPE)
        done: dict[int, int] = {}
        for j, z in enumerate(zs):
            if z in done:  # clamped 2.5D context repeats edge slices: decode once, copy
                out[j] = out[done[z]]
            else:
                self._read_chunk(s, "image", int(z), out[j])
                done[z] = j
        return out

    def read_label(self, subject: int | str, z: int, out: np.ndarray | None = None) -> np.ndarray:
        s = self.subject_number(subject)
        _, h, w = self.shapes[s]
        if out is None:
            out = np.empty((h, w), dtype=store.LABEL_DTYPE)
        self._read_chunk(s, "label", int(z), out)
        return out

    def read_batch(self, subjects: np.ndarray, zs: np.ndarray, context: int, images: np.ndarray,
                   labels: np.ndarray) -> None:
        """A batch in one call: row j gets the `context` image slices centred on slice zs[j] of subject number
        subjects[j] (clamped at the volume's ends, as `data.dataset.context_window`) into images[j] (context, H, W)
        and its label into labels[j]. Every slice is checked to exist before any is read, a repeated edge slice is
        decoded once, and each chunk is decoded straight into its row.

        The per-pair work is plain Python over ints: numpy's per-call costs (~1-3 us each for asarray, clip,
        flatnonzero on a handful of values) made a fixed ~16 us a call, which for the one-item reads of `ds[i]`
        was a third of the glue around a pair (`ctslice bench loader`, README "Benchmarks")."""
        subjects = subjects.tolist() if isinstance(subjects, np.ndarray) else [int(s) for s in subjects]
        zs = zs.tolist() if isinstance(zs, np.ndarray) else [int(z) for z in zs]
        counts = self.shapes[subjects, 0].tolist()  # (an IndexError for a subject number out of range)
        for s, z, count in zip(subjects, zs, counts):
            if not 0 <= z < count:
                raise IndexError(f"{self.subjects[s]}: slice {z} out of range (subject has {count})")
        around = range(-(context // 2), context // 2 + 1)  # a window's steps from its centre
        buf = self._buffer(images[0, 0].nbytes + _READ_SLACK)  # (an image row is larger than a label)
        image_key, label_key = _IMAGE_KEY, _LABEL_KEY
        for j, (s, z, count) in enumerate(zip(subjects, zs, counts)):
            folder, rows, previous = self._folders[s], images[j], -1
            for c, d in enumerate(around):
                zc = min(max(z + d, 0), count - 1)
                if zc == previous:  # clamped context repeats the edge slice (always next to itself)
                    rows[c] = rows[c - 1]
                else:
                    self._chunk_into(f"{folder}/{image_key.format(zc)}", s, "image", zc, rows[c], buf)
                    previous = zc
            self._chunk_into(f"{folder}/{label_key.format(z)}", s, "label", z, labels[j], buf)

    def _read_chunk(self, s: int, array: str, z: int, out: np.ndarray) -> None:
        if not 0 <= z < self.shapes[s, 0]:
            raise IndexError(f"{self.subjects[s]}: slice {z} out of range (subject has {self.shapes[s, 0]})")
        # Same path as store.chunk_path, built as a string: Path joins cost ~5 us, a tenth of reading the file.
        path = f"{self._folders[s]}/{layout.chunk_key(array, z, 0, 0)}"
        self._chunk_into(path, s, array, z, out, self._buffer(out.nbytes + _READ_SLACK))

    def _chunk_into(self, path: str, s: int, array: str, z: int, out: np.ndarray, buf: bytearray) -> None:
        """Read chunk file `path` (slice z of `array` of subject number s) into `buf`, check and decode it into
        `out`. The error context is only put together when something is wrong: read and decode report with an
        empty `where`, and their message gets it in front (the same text as if it had been passed)."""
        try:
            raw = (_read_file(path, buf, "") if self._shards is None else
                   self._shards.read(self._shard_paths[array][s], z, int(self.shapes[s, 0]), buf))
            store.decode_chunk(raw, out.dtype, out.shape, "", out=out)
        except FileNotFoundError:
            if self._fetched(s):
                return self._chunk_into(path, s, array, z, out, buf)
            if self._superseded(s):  # a version no longer current, being deleted or gone: an update, not damage
                raise CacheError(updated_message(self.cache, f"subject {self.subjects[s]}'s folder is gone")) from None
            path = path if self._shards is None else self._shard_paths[array][s]
            raise CacheError(f"{self._where(s, array, z)}: chunk file {path} is missing, the cache is damaged "
                             f"(run `ctslice cache verify`)") from None
        except CacheError as e:
            raise CacheError(f"{self._where(s, array, z)}{e}") from None

    def _where(self, s: int, array: str, z: int) -> str:
        return f"{self.cache}: subject {self.subjects[s]} slice {z} ({array})"

    @property
    def fork_safe(self) -> bool:
        """False for the mirror of an object store: the store client's threads (obstore's runtime) do not survive a
        fork, and a forked worker that fetches hangs or crashes, so loaders start such readers' workers by spawn."""
        return self._remote is None

    def _fetched(self, s: int) -> bool:
        """For the mirror of a cache on object storage (cache/mirror.py): fetch the subject's folder, whole, the
        first time one of its chunks is missing here. False for a local cache, or when there is nothing to fetch."""
        return self._remote is not None and self._remote.fetch_subject(self._folders[s][len(str(self.cache)) + 1:])

    def _superseded(self, s: int) -> bool:
        """Is this reader's version no longer the cache's (or its subject folder gone)? Asked only when a chunk
        file is missing: a folder being deleted still exists while its files go, so the manifest decides."""
        if not os.path.isdir(self._folders[s]):
            return True
        try:
            return _version(read_manifest(self.cache)) != self._version
        except CacheError:  # no readable manifest: the cache is being removed or rebuilt
            return True

    def _buffer(self, size: int) -> bytearray:
        """This thread's read buffer, at least `size` bytes (created on first use in each process and thread)."""
        local = self.__dict__.get("_local")
        if local is None:
            local = self.__dict__["_local"] = threading.local()
        buf = getattr(local, "buf", None)
        if buf is None or len(buf) < size:
            buf = local.buf = bytearray(size)
        return buf


def _version(manifest: Manifest) -> tuple:
    """What identifies the data a manifest stands for: its slice index and subject folders."""
    return manifest.slice_index, tuple(sorted(r.path for r in manifest.subjects.table.values()))


def _open_version(cache: Path) -> tuple[Manifest, Lease | None]:
    """The cache's manifest with a lease on its version (None for a cache without lease files). Its file is hashed
    before it is read and again once the lease is held (cheaper than reading it twice): if it changed meanwhile
    the version may already be going, so start over."""
    for _ in range(_OPEN_TRIES):
        before = manifest_digest(cache)
        manifest = read_manifest(cache)
        try:
            lease = take_lease(cache, manifest)
        except VersionGone:  # being removed by an update that has already written a newer manifest
            continue
        if lease is None or manifest_digest(cache) == before:
            return manifest, lease
        lease.close()
    raise CacheError(updated_message(cache, f"it changed {_OPEN_TRIES} times while being opened"))


def _read_file(path: str, buf: bytearray, where: str) -> np.ndarray:
    """The whole file, read into `buf`, as a read-only uint8 view of it (valid until the next read into `buf`).
    Raises FileNotFoundError for a missing file (the caller tells damage from an update)."""
    fd = layout.open_for_reading(path, "chunk file", where)  # no FIFO hang, no link; a device reads at most `buf`
    try:
        # One read returns a whole regular file on local filesystems; loop in case a network filesystem returns
        # less (the last call only sees end of file). A file that fills the buffer is longer than any valid
        # chunk: reading stops there and the checksum reports the damage.
        view, n = memoryview(buf), 0
        while n < len(buf):
            got = os.readv(fd, [view[n:]])
            if got == 0:
                break
            n += got
    except OSError as e:
        raise CacheError(f"{where}: cannot read chunk file {path} ({e.strerror})") from None
    finally:
        os.close(fd)
    raw = np.frombuffer(buf, dtype=np.uint8, count=n)
    raw.flags.writeable = False  # google_crc32c takes read-only buffers only
    return raw


def _check_index_layout(cache: Path, index: store.SliceIndex, offsets: np.ndarray) -> None:
    """The reader maps rows to (subject, slice) by offsets: check that the index is laid out that way."""
    expected_subject = np.repeat(np.arange(len(offsets) - 1, dtype=np.int64), np.diff(offsets))
    if len(index) != offsets[-1] or not np.array_equal(index.subject, expected_subject) or not np.array_equal(
            index.slice, np.arange(len(index)) - offsets[expected_subject]):
        raise CacheError(f"{cache}: the slice index does not match the subjects' slice counts in the manifest; "
                         f"the cache is inconsistent (run `ctslice cache verify`)")

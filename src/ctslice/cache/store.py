"""The cache's arrays on disk: zarr v3 groups, one per subject, one chunk per slice (folders: layout.py), in one
file per slice or, in the "shards" layout, one shard file per array (cache/shards.py); written without zarr's
per-chunk cost (cache/encode.py), byte for byte what zarr writes.

    CACHE/subjects/<id>-<key>/           zarr group per subject: image (S,H,W) int16, label (S,H,W) uint8,
                                         foreground (S,) int32, present (S, labels) bool, hu_histogram
                                         (65536,) int64; attrs = its record
    CACHE/slice_index/<token>/           zarr group: the slice index of all subjects, consolidated

A subject folder's name carries its key (hash of settings and source contents), so a new version of a subject
never overwrites the old one: the manifest switches from one to the other, and the old one is deleted by the
preprocess run after that (readers that opened the old manifest keep reading it meanwhile). A folder under
subjects/ is complete, because it only gets there by a rename, after its files were synced to disk.
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import google_crc32c
import numcodecs
import numpy as np
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec

from ..errors import CacheError
from . import encode, layout, marks, shards
from .layout import INDEX_DIR, STAGING_DIR, SUBJECTS_DIR  # noqa: F401  (re-exported)

HISTOGRAM = "hu_histogram"

# Codec, chosen by `ctslice bench codecs` (one core, 512x512 demo slices with CT-like noise; README "Cache
# format"): Blosc lz4 level 5 with byte shuffle decodes images at ~3,800 MB/s (0.14 ms a slice) at a 2.0x ratio;
# zstd level 1 stores them ~25% smaller (2.6x) but decodes at ~850 MB/s (0.6 ms a slice), which alone would cap
# one loader worker near 1,600 slices/s. Reading is the hot path, so lz4. Labels compress 100x with either.
# The crc32c checksum after compression makes every damaged chunk detectable (verify, and the reader's check).
IMAGE_CODECS = (BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"), Crc32cCodec())
LABEL_CODECS = (BloscCodec(cname="lz4", clevel=5, shuffle="noshuffle"), Crc32cCodec())
SMALL_CODECS = (BloscCodec(cname="zstd", clevel=3, shuffle="shuffle"), Crc32cCodec())

IMAGE_DTYPE = np.dtype("int16")
LABEL_DTYPE = np.dtype("uint8")


def subject_folder(subject_id: str, key: str) -> str:
    return f"{SUBJECTS_DIR}/{subject_id}-{key[:16]}"


def _create(group: zarr.Group, name: str, data: np.ndarray, chunks: tuple[int, ...], codecs) -> None:
    # write_empty_chunks: every slice has its chunk file, so a missing file always means damage.
    array = group.create_array(name, shape=data.shape, chunks=chunks, dtype=data.dtype, compressors=codecs,
                               config={"write_empty_chunks": True})
    array[...] = data


def _write_array(group: zarr.Group, folder: Path, name: str, data: np.ndarray, codecs, sliced: bool = False,
                 sharded: bool = False, threads: int = 1) -> None:
    """What `_create` writes (and, with `sharded`, what zarr writes with shards=data.shape), with the chunks
    encoded and written here (cache/encode.py: byte-identical, without zarr's per-chunk cost); zarr writes the
    metadata. `sliced`: chunks (1, H, W), else one chunk; `sharded`: those slices in one shard file."""
    chunks = (1, *data.shape[1:]) if sliced else data.shape
    group.create_array(name, shape=data.shape, chunks=chunks, shards=(max(1, len(data)), *data.shape[1:])
                       if sharded else None, dtype=data.dtype, compressors=codecs, config={"write_empty_chunks": True})
    if not sliced:
        files = {layout.chunk_key(name, *(0 for _ in data.shape)): encode.encode_chunk(data, codecs)}
    elif sharded:
        files = {layout.chunk_key(name, 0, 0, 0): shards.pack(encode.encode_slices(data, codecs, threads))}
    else:
        files = {layout.chunk_key(name, z, 0, 0): chunk
                 for z, chunk in enumerate(encode.encode_slices(data, codecs, threads))}
    made: set[str] = set()
    for key, chunk in files.items():  # strings and os calls: Path.mkdir/write_bytes cost more than a slice's encode
        parent, path = os.path.dirname(f"{folder}/{key}"), f"{folder}/{key}"
        if parent not in made:
            os.makedirs(parent, exist_ok=True)
            made.add(parent)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        try:
            os.write(fd, chunk)  # one write of a chunk (a regular file takes it whole)
        finally:
            os.close(fd)


def write_subject(cache: Path, folder: str, image: np.ndarray, label: np.ndarray, foreground: np.ndarray,
                  present: np.ndarray, record: dict[str, Any], hu_histogram: np.ndarray | None = None,
                  sharded: bool = False, threads: int = 1) -> None:
    """Write a subject's arrays under a temporary name, then rename the folder into place. `sharded`: the image
    and label arrays in the "shards" layout (cache/shards.py), else one chunk file per slice; `threads` encode
    their slices.

    If the folder already exists, it holds the same content (same key) from an earlier, interrupted run or
    another worker: the new copy is dropped."""
    cache = Path(cache)
    target = cache / folder
    staging = cache / STAGING_DIR / f"{Path(folder).name}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    staging.parent.mkdir(parents=True, exist_ok=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        group = zarr.open_group(zarr.storage.LocalStore(staging), mode="w",
                                 attributes={"ctslice": marks.SUBJECT, "record": record})  # mark: cache/marks.py
        for name, data, codecs in (("image", image.astype(IMAGE_DTYPE, copy=False), IMAGE_CODECS),
                                   ("label", label.astype(LABEL_DTYPE, copy=False), LABEL_CODECS)):
            _write_array(group, staging, name, data, codecs, sliced=True, sharded=sharded, threads=threads)
        _write_array(group, staging, "foreground", foreground.astype(np.int32, copy=False), SMALL_CODECS)
        _write_array(group, staging, "present", present.astype(bool, copy=False), SMALL_CODECS)
        if hu_histogram is not None:  # foreground HU counts, for the dataset statistics (cache/statistics.py)
            _write_array(group, staging, HISTOGRAM, hu_histogram.astype(np.int64, copy=False), SMALL_CODECS)
        if target.exists():
            return
        os.rename(staging, target)  # on disk before the manifest names it: sync_filesystem, called by the writer
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def sync_filesystem(cache: Path) -> None:
    """Flush everything written to the cache's filesystem to disk, so that a power loss after the manifest swap
    cannot leave the manifest pointing at empty chunks. One syncfs(2) for the whole run: fsync of every chunk file
    (thousands a subject) cost +160% of preprocess time where syncfs costs a few percent (README "Reliability").
    Workers on this machine share its page cache, so this covers their files; on a shared filesystem each
    worker's close() already makes its files visible, and durable to the server's own guarantees."""
    fd = os.open(cache, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _LIBC is not None and _LIBC.syncfs(fd) == 0:
            return
        os.sync()  # no syncfs (not Linux): flush every filesystem
    finally:
        os.close(fd)


def _load_libc():
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc if hasattr(libc, "syncfs") else None
    except OSError:
        return None


_LIBC = _load_libc()


def subject_exists(cache: Path, folder: str) -> bool:
    return os.path.isfile(os.path.join(cache, folder, "zarr.json"))  # strings: once per subject in every run


def open_subject(cache: Path, folder: str) -> zarr.Group:
    path = Path(cache) / folder
    try:
        return zarr.open_group(zarr.storage.LocalStore(path, read_only=True), mode="r")
    except (FileNotFoundError, ValueError, KeyError) as e:
        raise CacheError(f"{cache}: subject folder {folder} is missing or unreadable ({e})") from None


HISTOGRAM_BINS = 65536


def read_histogram(cache: Path, folder: str) -> np.ndarray | None:
    """A subject's foreground HU histogram (int64, 65536 bins), or None for a subject written without one. Its
    chunk file is read and checked like a slice's (`read_chunk`): zarr would read a missing chunk as zeros and
    raise its own error on a bad checksum. CacheError, naming the folder, when it is missing or damaged."""
    where = f"{cache}: subject folder {folder}: {HISTOGRAM}"
    metadata = Path(cache) / folder / HISTOGRAM / "zarr.json"
    if not os.path.lexists(metadata):
        return None
    if not layout.is_regular(metadata):
        raise CacheError(f"{where}: {metadata} is not a regular file (a link, FIFO or device)")
    return read_chunk(Path(cache) / folder / layout.chunk_key(HISTOGRAM, 0), np.dtype("int64"),
                      (HISTOGRAM_BINS,), where)


# Blosc header (16 bytes), its worst-case overhead and the crc32c: no valid chunk is longer than its raw size plus this.
_CHUNK_SLACK = 4096


def read_chunk(path: Path, dtype: np.dtype, shape: tuple[int, ...], where: str, hint: str = "") -> np.ndarray:
    """One whole-array or slice chunk file, checksum-checked and decoded (CacheError naming `where` if it is
    missing, special or damaged)."""
    size = int(np.prod(shape)) * dtype.itemsize
    try:
        raw = layout.read_regular(path, size + _CHUNK_SLACK, where)  # no FIFO hang, no endless /dev/zero
    except FileNotFoundError:
        raise CacheError(f"{where}: chunk file is missing{hint}") from None
    except OSError as e:
        raise CacheError(f"{where}: cannot read chunk ({e.strerror or e}){hint}") from None
    flat = decode_chunk(raw, dtype, (1, int(np.prod(shape))), where, hint=hint)
    return flat.reshape(shape)


class SubjectSlices:
    """A subject's image or label slices one at a time, checked and decoded as `read_chunk` does, in either
    layout (for verify and the statistics' recount; the loader's own path is cache/reader.py). Errors are
    CacheErrors naming `where`; close() lets go of a sharded subject's open files."""

    def __init__(self, cache: Path, folder: str, shape: tuple[int, int, int], sharded: bool):
        self.folder, self.shape = f"{cache}/{folder}", tuple(shape)
        self.files = shards.ShardFiles(keep=2) if sharded else None
        self._buf = bytearray(self.shape[1] * self.shape[2] * IMAGE_DTYPE.itemsize + _CHUNK_SLACK)

    def check_index(self, array: str, where: str) -> None:
        """Open a sharded array and check its shard index (nothing to do for one file per slice)."""
        if self.files is not None:
            self._shard(array, where, lambda path: self.files.index(path, self.shape[0]))

    def read(self, array: str, z: int, where: str, hint: str = "") -> np.ndarray:
        dtype, plane = LABEL_DTYPE if array == "label" else IMAGE_DTYPE, self.shape[1:]
        if self.files is None:
            return read_chunk(Path(self.folder) / layout.chunk_key(array, z, 0, 0), dtype, plane, where, hint)
        raw = self._shard(array, where, lambda path: self.files.read(path, z, self.shape[0], self._buf))
        return decode_chunk(raw, dtype, (1, plane[0] * plane[1]), where, hint=hint).reshape(plane)

    def _shard(self, array: str, where: str, action):
        path = shards.shard_path(self.folder, array)
        try:
            return action(path)
        except FileNotFoundError:
            raise CacheError(f"{where}: shard file {path} is missing") from None
        except CacheError as e:
            raise CacheError(f"{where}{e}") from None

    def close(self) -> None:
        if self.files is not None:
            self.files.close()


def read_subject_record(cache: Path, folder: str) -> dict[str, Any]:
    return dict(open_subject(cache, folder).attrs["record"])


@dataclass(frozen=True)
class SliceIndex:
    """One row per cached slice, in manifest subject order then slice order."""

    subjects: tuple[str, ...]
    """Subject ids; `subject` below indexes into this."""
    subject: np.ndarray  # int32 (N,)
    slice: np.ndarray  # int32 (N,)
    foreground: np.ndarray  # int32 (N,) labelled voxels in the slice
    present: np.ndarray  # bool (N, labels): which labels occur in the slice (column 0: background)
    # Per subject (one row each, in `subjects` order), kept so that the dataset statistics of a run are computed
    # from the index without reading unchanged subjects (cache/slice_index.py); None in an index written before.
    label_voxels: np.ndarray | None = None  # int64 (subjects, labels): the record's label_voxels
    volume_ml: np.ndarray | None = None  # float64 (subjects,): one cached voxel's volume in ml
    original_spacing: np.ndarray | None = None  # float64 (subjects, 3): original slice thickness, in-plane (2)
    histogram: np.ndarray | None = None  # int64 (65536,): the subjects' foreground HU histograms summed

    def __len__(self) -> int:
        return len(self.slice)


def build_slice_index(cache: Path, folders: dict[str, str]) -> SliceIndex:
    """Concatenate the per-subject foreground/present arrays (subject id -> folder, in sorted id order)."""
    ids = tuple(sorted(folders))
    parts_fg, parts_present, parts_subject, parts_slice = [], [], [], []
    for i, sid in enumerate(ids):
        group = open_subject(cache, folders[sid])
        fg = np.asarray(group["foreground"][...])
        parts_fg.append(fg)
        parts_present.append(np.asarray(group["present"][...]))
        parts_subject.append(np.full(len(fg), i, dtype=np.int32))
        parts_slice.append(np.arange(len(fg), dtype=np.int32))
    if not ids:
        return SliceIndex((), *(np.zeros(0, np.int32) for _ in range(3)), np.zeros((0, 0), bool))
    return SliceIndex(ids, np.concatenate(parts_subject), np.concatenate(parts_slice),
                      np.concatenate(parts_fg), np.concatenate(parts_present))


def write_slice_index(cache: Path, index: SliceIndex) -> str:
    """Write under a fresh folder name (the manifest then points to it); returns that folder."""
    folder = f"{INDEX_DIR}/{uuid.uuid4().hex[:12]}"
    group = zarr.open_group(zarr.storage.LocalStore(Path(cache) / folder), mode="w",
                            attributes={"ctslice": marks.SLICE_INDEX, "subjects": list(index.subjects)})
    for name in INDEX_ARRAYS + SUBJECT_ARRAYS:
        data = getattr(index, name)
        if data is not None:
            _create(group, name, data, _index_chunks(data.shape), SMALL_CODECS)
    return folder


INDEX_ARRAYS = ("subject", "slice", "foreground", "present")
SUBJECT_ARRAYS = ("label_voxels", "volume_ml", "original_spacing", "histogram")


def _index_chunks(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(max(1, n) for n in shape)  # one chunk per array


def read_slice_index(cache: Path, folder: str) -> SliceIndex:
    """The slice index, with every chunk file checked to exist: zarr would read a missing chunk as its fill value
    (zeros), which would silently bias sampling. Only regular files are read (no FIFO can hang it)."""
    path = Path(cache) / folder
    where = f"{cache}: slice index {folder}"
    try:
        layout.check_regular_tree(path, where)
        group = zarr.open_group(zarr.storage.LocalStore(path, read_only=True), mode="r")
        arrays = {}
        for name in INDEX_ARRAYS + SUBJECT_ARRAYS:
            if name in SUBJECT_ARRAYS and not (path / name / "zarr.json").is_file():
                continue  # an index written before they were kept
            array = group[name]
            if array.size and not (path / layout.chunk_key(name, *(0 for _ in array.shape))).is_file():
                raise CacheError(f"{where}: chunk of {name} is missing, the index is damaged")
            arrays[name] = np.asarray(array[...])
        return SliceIndex(tuple(group.attrs["subjects"]), **arrays)
    except (FileNotFoundError, KeyError, ValueError) as e:
        raise CacheError(f"{where} is missing or damaged ({e})") from None


# --- Reading single slices without zarr-python's per-call overhead (see cache/reader.py) ---------------------

def chunk_path(cache: Path, folder: str, array: str, z: int) -> Path:
    """The file holding slice z of `array` (chunks (1, H, W))."""
    return Path(cache) / folder / layout.chunk_key(array, z, 0, 0)


_CRC32C_RESIDUE = 0x48674BC7


DAMAGE_HINT = " (run `ctslice cache verify`)"
"""Appended to a damaged-chunk error for readers; verify, which is what it points to, passes hint=""."""


def decode_chunk(raw: bytes, dtype: np.dtype, shape: tuple[int, int], where: str,
                 out: np.ndarray | None = None, hint: str = DAMAGE_HINT) -> np.ndarray:
    """Check the crc32c trailer, then Blosc-decompress one slice chunk, exactly as zarr would.

    With `out` (a writable, C-contiguous array of `shape` and `dtype`), decompress straight into it and return
    it: the loader fills its arrays without another copy of each slice (cache/reader.py)."""
    if len(raw) < 4:
        raise CacheError(f"{where}: chunk is truncated ({len(raw)} bytes)")
    # A crc32c over the payload followed by its own little-endian crc32c always gives the same residue, so the
    # whole chunk is checked at once: slicing the payload out first (google_crc32c takes bytes, not a view)
    # would copy it, ~18 us for a 0.2 MB image chunk, a tenth of its decode time.
    payload = memoryview(raw)[:-4]
    if google_crc32c.value(raw) != _CRC32C_RESIDUE:
        raise CacheError(f"{where}: checksum mismatch, the chunk is damaged{hint}")
    if out is not None:
        # Blosc header bytes 4..8: uncompressed size. A smaller chunk would leave part of `out` unwritten.
        nbytes = int.from_bytes(payload[4:8], "little") if len(payload) >= 16 else -1
        if nbytes != out.nbytes:
            raise CacheError(f"{where}: chunk holds {nbytes} bytes, expected {out.nbytes}")
        try:
            numcodecs.blosc.decompress(payload, out)
        except (RuntimeError, ValueError) as e:
            raise CacheError(f"{where}: cannot decompress chunk ({e})") from None
        return out
    try:
        out = numcodecs.blosc.decompress(payload)
    except (RuntimeError, ValueError) as e:
        raise CacheError(f"{where}: cannot decompress chunk ({e})") from None
    arr = np.frombuffer(out, dtype=dtype)
    if arr.size != shape[0] * shape[1]:
        raise CacheError(f"{where}: chunk holds {arr.size} values, expected {shape[0] * shape[1]}")
    return arr.reshape(shape)

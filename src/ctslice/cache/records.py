"""Per-subject bookkeeping: one record file per subject version, and the compact table row the manifest keeps.

    CACHE/records/<id>-<sha16>.json      a subject's full `SubjectRecord` (fingerprints of every input file,
                                         geometry, header, voxel counts), canonical JSON; <sha16> is the start of
                                         the sha256 of the file's bytes, so the name checks the content

A record file is written once under its name and never changed: a new version of a subject (new key, or only
refreshed file times) is a new file, and the manifest switches to it. The manifest holds one `SubjectEntry` per
subject: what the planner, the slice index, readers, `cache info` and `cache status` need (folder, key, record
file, a digest of the input files' sizes and times, shape, spacing, voxel counts for the warnings, folder size),
so that a run that changes nothing reads no record file, and one that changes a subject reads and writes only
that subject's. `Records` is the manifest's `subjects`: a mapping id -> SubjectRecord that reads a record file
the first time it is asked for it; `table` gives the rows without reading any.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterator, MutableMapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import CacheError, CtsliceError
from ..files import write_atomic
from . import layout
from .names import check_name
from .sizes import folder_size

# One record lists ~150 bytes per input file: 118 files is ~20 kB. Anything far beyond is not one.
MAX_RECORD_BYTES = 64 << 20


@dataclass
class SubjectRecord:
    """One cached subject, as written by preprocessing (also stored in the subject group's attributes)."""

    id: str
    path: str
    """The subject's zarr group, relative to the cache root."""
    key: str
    """Hash of the settings and the source files' contents: equal keys mean identical cached arrays."""
    files: dict[str, dict[str, Any]]
    """Source file (relative to the dataset root) -> {"size", "mtime_ns", "sha256"}."""
    slices: int
    shape: list[int]
    """Cached (slices, rows, columns)."""
    spacing: list[float]
    """Cached voxel size in mm: (slice thickness, row spacing, column spacing)."""
    geometry: dict[str, Any]
    """imaging.geometry.Geometry as JSON: maps cached slices back to the original grid."""
    label_voxels: list[int]
    """Voxels per label index in the cached volume (index 0 = background)."""
    overlap_voxels: int = 0
    """Voxels claimed by more than one structure mask (the later index won), each counted once, on the original
    grid."""
    original_label_voxels: int = 0
    """Labelled voxels on the original grid, each counted once: what overlap_voxels is a share of (0 in caches
    built before it was kept; their overlaps are shown without a share)."""
    cropped_label_voxels: int = 0
    """Labelled voxels that fell outside the cached slice size (lost to the crop)."""
    missing_structures: list[str] = field(default_factory=list)
    """Label-map names whose mask file this subject lacks: unknown there (not background), so training and
    evaluation leave them out of this subject's loss and metrics."""
    warnings: list[str] = field(default_factory=list)
    header: dict[str, Any] = field(default_factory=dict)
    """The CT's NIfTI header fields a prediction must carry to open over it (imaging.volume.header_fields:
    qform/sform and their codes, units, pixdim); empty in caches built before it was kept."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SubjectRecord:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    # The same names as SubjectEntry's, so that code reading only these works with either.
    @property
    def labelled(self) -> int:
        return sum(self.label_voxels[1:])

    @property
    def missing(self) -> int:
        return len(self.missing_structures)

    @property
    def stat(self) -> str:
        return stat_digest(self.files)


@dataclass(frozen=True)
class SubjectEntry:
    """A subject's row in the manifest's table: enough for every fixed cost of a run without its record file."""

    id: str
    path: str
    """Its zarr group (subjects/<id>-<key16>)."""
    key: str
    record: str
    """Its record file (records/<id>-<sha16>.json)."""
    stat: str
    """`stat_digest` of its input files' names, sizes and modification times (the planner's fast path)."""
    shape: list[int]
    spacing: list[float]
    labelled: int
    """Labelled voxels in the cached volume (sum of label_voxels without background)."""
    missing: int
    """Mask files the subject lacks."""
    cropped_label_voxels: int = 0
    overlap_voxels: int = 0
    original_label_voxels: int = 0
    size: list[int] = field(default_factory=lambda: [0, 0, 0])
    """Its folder's [files, bytes, disk bytes], taken once when it was written (`cache info` sums these)."""

    @property
    def slices(self) -> int:
        return self.shape[0]

    def to_json(self) -> dict[str, Any]:
        # by hand: dataclasses.asdict copies recursively, a tenth of a no-change run's time at 10,000 subjects
        return {name: getattr(self, name) for name in _ENTRY_FIELDS}

    @classmethod
    def from_json(cls, sid: str, data: dict[str, Any]) -> SubjectEntry:
        return cls(sid, *(data.get(name) for name in _ENTRY_FIELDS))


_ENTRY_FIELDS = tuple(name for name in SubjectEntry.__dataclass_fields__ if name != "id")  # in field order
Row = SubjectEntry | SubjectRecord
"""What `Records.table` gives per subject: the row, or the record itself for one not yet written."""


def stat_digest(files: dict[str, dict[str, Any]]) -> str:
    """16 hex digits over the sorted (name, size, mtime_ns) of a subject's input files: equal digests mean every
    file has its recorded size and time (the fingerprint's fast path), without reading the record."""
    return _digest([(name, int(f["size"]), int(f["mtime_ns"])) for name, f in files.items()])


def _digest(rows: list[tuple[str, int, int]]) -> str:
    rows.sort()
    # '\0' and '\n' cannot occur in file names read from a dataset folder listing
    text = "\n".join(f"{name}\0{size}\0{mtime}" for name, size, mtime in rows)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def current_stat_digest(root: Path, names: tuple[str, ...]) -> str | None:
    """`stat_digest` of the files as they are now (one stat each); None if one is missing or not a regular file
    (the slow path then says what)."""
    rows, root = [], os.fspath(root)
    for name in names:
        try:
            st = os.stat(f"{root}/{name}")  # a string join: this runs once per input file of the dataset
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        rows.append((name, st.st_size, st.st_mtime_ns))
    return _digest(rows)


def record_bytes(record: SubjectRecord) -> bytes:
    return json.dumps(record.to_json(), sort_keys=True, separators=(",", ":")).encode()


def record_name(record: SubjectRecord, data: bytes) -> str:
    return f"{layout.RECORDS_DIR}/{record.id}-{hashlib.sha256(data).hexdigest()[:16]}.json"


def write_record(cache: Path, record: SubjectRecord) -> str:
    """Write the record's file (once: the name is its content's hash) and return its path relative to the cache.
    Not synced here: the manifest writer syncs the filesystem before the manifest names it."""
    _check_id(record.id)  # the id names the file
    data = record_bytes(record)
    rel = record_name(record, data)
    path = Path(cache) / rel
    if not layout.is_regular(path):
        folder = Path(cache) / layout.RECORDS_DIR
        if os.path.lexists(folder):
            layout.inside(cache, layout.RECORDS_DIR)  # refuses a link leading out of the cache
        else:
            folder.mkdir()
        write_atomic(path, data, durable=False)
    return rel


def read_record(cache: Path, entry: SubjectEntry) -> SubjectRecord:
    """The record file of `entry`, checked: its bytes hash to its name, its fields have their types, and it names
    the same subject, folder and key as the row."""
    where = f"{cache}: subject {entry.id}: record file {entry.record}"
    try:
        data = layout.read_regular(layout.inside(cache, entry.record), MAX_RECORD_BYTES, where)
    except FileNotFoundError:
        raise CacheError(f"{where} is missing (run `ctslice cache verify`)") from None
    if not entry.record.endswith(f"-{hashlib.sha256(data).hexdigest()[:16]}.json"):
        raise CacheError(f"{where} is damaged (its bytes do not hash to its name; run `ctslice cache verify`)")
    try:
        raw = json.loads(data)
        check_record(entry.id, raw)
        record = SubjectRecord.from_json(raw)
    except (CacheError, ValueError, TypeError) as e:
        raise CacheError(f"{where} is damaged ({e})") from None
    if (record.path, record.key, list(record.shape)) != (entry.path, entry.key, list(entry.shape)):
        raise CacheError(f"{where} names another folder, key or shape than the manifest's table")
    return record


def entry_of(cache: Path, record: SubjectRecord, rel: str, size: list[int] | None = None) -> SubjectEntry:
    """The table row of a written record (`size`: its folder's, when known; else the folder is walked once)."""
    if size is None:
        s = folder_size(Path(cache) / record.path)
        size = [s.files, s.bytes, s.disk_bytes]
    return SubjectEntry(id=record.id, path=record.path, key=record.key, record=rel, stat=record.stat,
                        shape=list(record.shape), spacing=list(record.spacing), labelled=record.labelled,
                        missing=record.missing, cropped_label_voxels=record.cropped_label_voxels,
                        overlap_voxels=record.overlap_voxels, original_label_voxels=record.original_label_voxels,
                        size=list(size))


class Records(MutableMapping[str, SubjectRecord]):
    """A manifest's subjects: id -> SubjectRecord, each record file read on first access (then kept). Records
    set here (new subjects, or changed ones) are written by `save`, which turns them into table rows."""

    def __init__(self, cache: Path | None = None, rows: dict[str, Row] | None = None):
        self.cache = None if cache is None else Path(cache)
        self._entries: dict[str, SubjectEntry] = {}
        self._loaded: dict[str, SubjectRecord] = {}
        self._new: set[str] = set()
        self._table: dict[str, Row] | None = None
        for sid, row in (rows or {}).items():
            if isinstance(row, SubjectEntry):
                self._entries[sid] = row
            else:
                self[sid] = row

    @property
    def table(self) -> dict[str, Row]:
        """id -> row (a record set here and not yet saved stands for its row): reads no record file. Built once
        until the records change (a run asks for it a dozen times); callers only read it."""
        if self._table is None:
            self._table = {sid: self._loaded[sid] if sid in self._new else self._entries[sid] for sid in self}
        return self._table

    def __getitem__(self, sid: str) -> SubjectRecord:
        record = self._loaded.get(sid)
        if record is None:
            entry = self._entries[sid]
            if self.cache is None:
                raise CacheError(f"subject {sid}: no cache to read its record from")
            record = self._loaded[sid] = read_record(self.cache, entry)
        return record

    def __setitem__(self, sid: str, record: SubjectRecord) -> None:
        self._loaded[sid] = record
        self._new.add(sid)
        self._table = None

    def __delitem__(self, sid: str) -> None:
        if sid not in self:
            raise KeyError(sid)
        self._table = None
        for d in (self._entries, self._loaded):
            d.pop(sid, None)
        self._new.discard(sid)

    def __iter__(self) -> Iterator[str]:
        yield from self._entries
        yield from (sid for sid in self._new if sid not in self._entries)

    def __len__(self) -> int:
        return len(self._entries.keys() | self._new)

    def __contains__(self, sid: object) -> bool:
        return sid in self._entries or sid in self._new

    def save(self, cache: Path) -> dict[str, SubjectEntry]:
        """Write the record file of every record set or read here (read ones may have been changed in place;
        an unchanged one has its file already) and return the whole table as rows."""
        self.cache = Path(cache)
        for sid, record in self._loaded.items():
            if sid not in self:
                continue
            old = self._entries.get(sid)
            rel = write_record(cache, record)
            if old is None or old.record != rel or sid in self._new:
                size = old.size if old is not None and old.path == record.path else None
                self._entries[sid] = entry_of(cache, record, rel, size)
        self._new.clear()
        self._table = None
        return dict(self._entries)


def as_records(cache: Path, subjects: Any) -> Records:
    """A manifest's `subjects` as Records (a caller may have set a plain dict of records or rows)."""
    return subjects if isinstance(subjects, Records) else Records(cache, dict(subjects))


# --- Checks of untrusted JSON ------------------------------------------------------------------------------------

def _check(ok: bool, what: str) -> None:
    if not ok:
        raise CacheError(what)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_id(sid: Any) -> None:
    try:  # ids name folders and output files: the one check for names read from files
        check_name(sid, "subject id")
    except CtsliceError as e:
        raise CacheError(str(e)) from None


def _check_shape(sid: str, shape: Any) -> None:
    if not (isinstance(shape, list) and len(shape) == 3 and all(_is_int(n) and n > 0 for n in shape)):
        raise CacheError(f"subject {sid}: bad shape")


def check_record(sid: str, r: Any) -> None:
    """The fields of a full record that readers rely on (a record file, or a subject of a format-2 manifest)."""
    _check_id(sid)
    _check(isinstance(r, dict) and r.get("id") == sid, f"subject {sid}: record without its id")
    layout.check_relative(r.get("path"), layout.SUBJECTS_DIR, f"subject {sid}")
    _check(isinstance(r.get("key"), str) and isinstance(r.get("files"), dict)
           and isinstance(r.get("geometry"), dict), f"subject {sid}: key, files or geometry missing")
    _check(all(isinstance(f, dict) and {"size", "mtime_ns", "sha256"} <= set(f) for f in r["files"].values()),
           f"subject {sid}: file fingerprints lack size, mtime_ns or sha256")
    _check_shape(sid, r.get("shape"))
    _check(r.get("slices") == r["shape"][0], f"subject {sid}: bad slice count")
    _check(isinstance(r.get("spacing"), list) and len(r["spacing"]) == 3, f"subject {sid}: bad spacing")
    _check(isinstance(r.get("label_voxels"), list) and all(_is_int(n) for n in r["label_voxels"]),
           f"subject {sid}: bad label_voxels")


_ENTRY_INTS = ("labelled", "missing", "cropped_label_voxels", "overlap_voxels", "original_label_voxels")


def check_entry(sid: str, e: Any) -> None:
    """A table row of the manifest: paths that are names the cache gives, and the types readers rely on. Run for
    every row of every manifest read, so each message is only formatted when its check fails."""
    _check_id(sid)
    if not isinstance(e, dict):
        raise CacheError(f"subject {sid}: row is not an object")
    layout.check_relative(e.get("path"), layout.SUBJECTS_DIR, f"subject {sid}")
    layout.check_relative(e.get("record"), layout.RECORDS_DIR, f"subject {sid}")
    if not (isinstance(e.get("key"), str) and isinstance(e.get("stat"), str)):
        raise CacheError(f"subject {sid}: key or stat missing")
    _check_shape(sid, e.get("shape"))
    spacing, size = e.get("spacing"), e.get("size")
    if not (isinstance(spacing, list) and len(spacing) == 3):
        raise CacheError(f"subject {sid}: bad spacing")
    if not all(type(e.get(k)) is int for k in _ENTRY_INTS):  # JSON's ints (not bools): as _is_int, faster
        raise CacheError(f"subject {sid}: bad voxel counts")
    if not (isinstance(size, list) and len(size) == 3 and all(type(n) is int for n in size)):
        raise CacheError(f"subject {sid}: bad size")

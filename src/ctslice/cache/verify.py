"""`verify_cache`: is every byte of a cache still good, and do its manifest and arrays agree?

Every slice chunk is read from its file (or, in the "shards" layout, from its byte range of the array's shard
file, whose index is checked first) and decoded as the loader would (`store.decode_chunk`: crc32c, then Blosc),
so a damaged byte anywhere is found and named by subject, array and slice (a damaged shard index: subject and
array). The per-subject statistics (foreground counts, present labels, label voxel totals) are recomputed from
the decoded labels, and the slice index and splits are checked against the subjects, and so are the per-subject
statistics the index keeps (voxels per label, summed histogram). Every record file is read and must hash to its
name. Leftovers of interrupted runs are reported but are not problems: readers never look at them.

Repairing needs the dataset, so it lives with preprocessing (`preprocess/repair.py`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import CacheError
from ..text import first_few
from . import layout, store
from .cleanup import leftovers
from .manifest import Manifest, SubjectRecord, read_manifest

ProgressFn = Callable[[int, int, str], None]
_ARRAYS = ("image", "label", "foreground", "present")  # and hu_histogram: _check_histogram


@dataclass(frozen=True)
class Problem:
    message: str
    subject: str | None = None
    """The damaged subject; None for problems of the manifest or slice index as a whole."""
    slice: int | None = None

    def __str__(self) -> str:
        where = " ".join(p for p in (self.subject, None if self.slice is None else f"slice {self.slice}") if p)
        return f"{where}: {self.message}" if where else self.message


@dataclass
class VerifyReport:
    cache: Path
    subjects: int = 0
    slices: int = 0
    chunks: int = 0
    """Chunk files decoded and checked."""
    problems: list[Problem] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)
    """Paths (relative to the cache) the manifest does not reference: information, not problems."""

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def damaged_subjects(self) -> list[str]:
        return sorted({p.subject for p in self.problems if p.subject is not None})


@dataclass
class SubjectCheck:
    """One subject's problems, plus its decoded statistics for the slice-index check."""

    problems: list[Problem] = field(default_factory=list)
    chunks: int = 0
    foreground: np.ndarray | None = None
    present: np.ndarray | None = None
    histogram: np.ndarray | None = None
    record: SubjectRecord | None = None
    """The subject's record (None: its record file is damaged)."""


def _expected_arrays(record: SubjectRecord, num_labels: int, sharded: bool
                     ) -> dict[str, tuple[tuple, tuple, tuple | None, np.dtype]]:
    """Array name -> (shape, chunks, shards, dtype), as store.write_subject creates them."""
    s, h, w = record.shape
    slice_shards = (max(1, s), h, w) if sharded else None
    return {
        "image": ((s, h, w), (1, h, w), slice_shards, store.IMAGE_DTYPE),
        "label": ((s, h, w), (1, h, w), slice_shards, store.LABEL_DTYPE),
        "foreground": ((s,), (s,), None, np.dtype("int32")),
        "present": ((s, num_labels), (s, num_labels), None, np.dtype(bool)),
    }


def _described(dtype, shape, chunks, shards) -> str:
    return f"{dtype}{list(shape)} in chunks {list(chunks)}" + (f" in shards {list(shards)}" if shards else "")


_read_chunk = store.read_chunk  # checksum-checked, no advice to run verify in verify's own output


def verify_subject(cache: Path, record: SubjectRecord, num_labels: int, sharded: bool = False) -> SubjectCheck:
    """Check one subject's folder against its manifest record; decodes every chunk it holds. `sharded`: the
    cache's layout is "shards" (each inner chunk and each shard index checked)."""
    cache, sid, check = Path(cache), record.id, SubjectCheck()
    problem = check.problems.append
    if not store.subject_exists(cache, record.path):
        problem(Problem(f"subject folder {record.path} is missing", sid))
        return check
    metadata = [cache / record.path / name / "zarr.json" for name in ("", *_ARRAYS)]
    special = [p for p in metadata if os.path.lexists(p) and not layout.is_regular(p)]
    if special:  # zarr would open it with a plain read: a FIFO would hang it
        problem(Problem(f"{special[0]} is not a regular file (a link, FIFO or device)", sid))
        return check
    try:
        group = store.open_subject(cache, record.path)
        stored_key = dict(group.attrs.get("record", {})).get("key")
        arrays = {name: group[name] for name in _ARRAYS}
    except (CacheError, KeyError, ValueError) as e:
        problem(Problem(f"subject folder {record.path} is unreadable ({e})", sid))
        return check
    if stored_key != record.key:
        problem(Problem(f"folder {record.path} holds key {str(stored_key)[:16]}, the manifest says "
                        f"{record.key[:16]}", sid))
    if record.slices != record.shape[0]:
        problem(Problem(f"manifest says {record.slices} slices but shape {record.shape}", sid))
    for name, (shape, chunks, shards, dtype) in _expected_arrays(record, num_labels, sharded).items():
        a = arrays[name]
        if (tuple(a.shape), tuple(a.chunks), a.shards, np.dtype(a.dtype)) != (shape, chunks, shards, dtype):
            problem(Problem(f"array {name} is {_described(a.dtype, a.shape, a.chunks, a.shards)}, expected "
                            f"{_described(dtype, shape, chunks, shards)}", sid))
    if check.problems:
        return check

    folder = cache / record.path
    s, h, w = record.shape
    for name, chunk, dtype, shape in (("foreground", (0,), np.dtype("int32"), (s,)),
                                      ("present", (0, 0), np.dtype(bool), (s, num_labels))):
        check.chunks += 1
        try:
            setattr(check, name, _read_chunk(folder / layout.chunk_key(name, *chunk), dtype, shape, name))
        except CacheError as e:
            problem(Problem(str(e), sid))
    totals = np.zeros(num_labels, dtype=np.int64)
    slices = store.SubjectSlices(cache, record.path, (s, h, w), sharded)
    readable = []
    for name in ("image", "label"):
        try:
            slices.check_index(name, name)
            readable.append(name)
        except CacheError as e:  # a damaged shard index or missing shard: the whole array is unreadable
            problem(Problem(str(e), sid))
    for z in range(s):
        for name in readable:
            check.chunks += 1
            try:
                data = slices.read(name, z, name)
            except CacheError as e:
                problem(Problem(str(e), sid, z))
                continue
            if name == "label":
                totals += _check_label_slice(data, sid, z, num_labels, check)
    slices.close()
    if ("label" in readable and not any(p.slice is not None for p in check.problems)
            and totals.tolist() != list(record.label_voxels)):
        problem(Problem(f"label voxel counts {totals.tolist()} differ from the manifest's {record.label_voxels}",
                        sid))
    _check_histogram(cache, record, check)
    return check


def _check_histogram(cache: Path, record: SubjectRecord, check: SubjectCheck) -> None:
    """The foreground HU histogram (the dataset's intensity statistics are summed from it): present, intact, and
    counting as many voxels as the subject has labelled ones (a missing chunk would read as all zeros)."""
    check.chunks += 1
    try:
        hist = store.read_histogram(cache, record.path)
    except CacheError as e:
        check.problems.append(Problem(str(e).removeprefix(f"{cache}: subject folder {record.path}: "), record.id))
        return
    if hist is None:
        check.problems.append(Problem(f"{store.HISTOGRAM} is missing (the intensity statistics would leave this "
                                      "subject out)", record.id))
    elif int(hist.sum()) == record.labelled and hist.min() >= 0:
        check.histogram = hist
    else:
        check.problems.append(Problem(f"{store.HISTOGRAM} counts {int(hist.sum())} voxels, the subject has "
                                      f"{sum(record.label_voxels[1:])} labelled ones", record.id))


def _check_label_slice(label: np.ndarray, sid: str, z: int, num_labels: int, check: SubjectCheck) -> np.ndarray:
    """Label values within the label map, and the stored foreground/present statistics of slice z."""
    top = int(label.max(initial=0))
    if top >= num_labels:
        check.problems.append(Problem(f"label value {top} is outside the label map (0..{num_labels - 1})", sid, z))
        return np.zeros(num_labels, dtype=np.int64)
    counts = np.bincount(label.ravel(), minlength=num_labels)
    if check.foreground is not None and int(check.foreground[z]) != int(counts[1:].sum()):
        check.problems.append(Problem(f"foreground says {int(check.foreground[z])} labelled voxels, the label "
                                      f"chunk has {int(counts[1:].sum())}", sid, z))
    if check.present is not None and not np.array_equal(check.present[z], counts > 0):
        check.problems.append(Problem("present labels disagree with the label chunk", sid, z))
    return counts


def _check_manifest(cache: Path, manifest: Manifest, checks: dict[str, SubjectCheck]) -> list[Problem]:
    """Splits, totals and the slice index against the subjects (each subject's own arrays checked already)."""
    problems = []
    records = manifest.subjects.table
    seen: dict[str, str] = {}
    for name, ids in manifest.splits.items():
        for sid in ids:
            if sid in seen:
                problems.append(Problem(f"subject {sid} is in both splits {seen[sid]} and {name}"))
            seen[sid] = name
            if sid not in records:
                problems.append(Problem(f"split {name} lists subject {sid}, which the cache does not hold"))
    problems += [Problem(f"subject {sid} is in no split") for sid in sorted(set(records) - set(seen))]
    slices = sum(r.slices for r in records.values())
    for key, value in (("subjects", len(records)), ("slices", slices)):
        if key in manifest.totals and manifest.totals[key] != value:
            problems.append(Problem(f"manifest totals say {manifest.totals[key]} {key}, the subjects hold {value}"))
    if manifest.slice_index is None:
        return problems + ([Problem("the manifest names no slice index")] if records else [])
    return problems + _check_slice_index(cache, manifest, checks)


def _check_slice_index(cache: Path, manifest: Manifest, checks: dict[str, SubjectCheck]) -> list[Problem]:
    """The consolidated index must list the cached subjects in id order, each with its slices 0..S-1 and the
    same statistics as the subject's own arrays (readers sample from the index, not from the subjects)."""
    try:
        index = store.read_slice_index(cache, manifest.slice_index)
    except Exception as e:  # noqa: BLE001  (any decoding failure means a damaged index)
        message = str(e) if isinstance(e, CacheError) else f"slice index {manifest.slice_index}: {e}"
        # the readers' advice to run verify is no advice in verify's own output
        return [Problem(message.removeprefix(f"{cache}: ").replace(store.DAMAGE_HINT, ""))]
    table = manifest.subjects.table
    ids = tuple(sorted(table))
    if index.subjects != ids:
        missing, extra = sorted(set(ids) - set(index.subjects)), sorted(set(index.subjects) - set(ids))
        return [Problem(f"slice index lists other subjects than the manifest (missing: {missing or 'none'}, "
                        f"extra: {extra or 'none'}, or another order)")]
    n_labels = manifest.num_labels
    if index.present.ndim != 2 or (len(index) and index.present.shape[1] != n_labels):
        return [Problem(f"slice index has present columns {index.present.shape[1:]}, expected {n_labels}")]
    problems = []
    for i, sid in enumerate(ids):
        rows = np.flatnonzero(index.subject == i)
        record, check = table[sid], checks.get(sid)
        if not np.array_equal(index.slice[rows], np.arange(record.slices)):
            problems.append(Problem(f"slice index has {len(rows)} rows for subject {sid}, not slices "
                                    f"0..{record.slices - 1}"))
            continue
        if check is None or check.foreground is None or check.present is None:
            continue  # the subject's own arrays are damaged: reported with the subject
        bad = np.flatnonzero((index.foreground[rows] != check.foreground)
                             | np.any(index.present[rows] != check.present, axis=1))
        if bad.size:
            problems.append(Problem(f"slice index statistics of subject {sid} differ from its arrays at slice(s) "
                                    f"{first_few(bad.tolist())}"))
    return problems + _check_subject_statistics(index, ids, checks, n_labels)


def _check_subject_statistics(index: store.SliceIndex, ids: tuple[str, ...], checks: dict[str, SubjectCheck],
                              n_labels: int) -> list[Problem]:
    """The index's per-subject voxel counts against the records, and its summed histogram against the subjects'
    (what the dataset statistics of the next run are computed from)."""
    if any(getattr(index, name) is None for name in store.SUBJECT_ARRAYS):
        return [Problem("slice index lacks the per-subject statistics (written by an older ctslice)")]
    problems = []
    if index.label_voxels.shape != (len(ids), n_labels):
        return [Problem(f"slice index label_voxels is {list(index.label_voxels.shape)}, expected "
                        f"{[len(ids), n_labels]}")]
    for i, sid in enumerate(ids):
        record = checks[sid].record if sid in checks else None
        if record is not None and index.label_voxels[i].tolist() != (list(record.label_voxels) + [0] * n_labels)[
                :n_labels]:
            problems.append(Problem(f"slice index label voxel counts of subject {sid} differ from its record"))
    hists = [checks[sid].histogram for sid in ids if sid in checks]
    if all(h is not None for h in hists) and len(hists) == len(ids):
        total = np.sum(hists, axis=0) if hists else np.zeros_like(index.histogram)
        if not np.array_equal(total, index.histogram):
            problems.append(Problem("slice index histogram differs from the sum of the subjects' histograms"))
    return problems


def verify_cache(cache: Path, workers: int = 4, progress: ProgressFn | None = None) -> VerifyReport:
    """Check a whole cache. `workers` threads decode subjects in parallel (crc32c and Blosc release the GIL).
    Raises CacheError only when the manifest itself cannot be read."""
    cache = Path(cache)
    manifest = read_manifest(cache)
    table = manifest.subjects.table
    report = VerifyReport(cache, subjects=len(table), slices=sum(r.slices for r in table.values()))
    ids = sorted(table)

    def check_one(sid: str) -> SubjectCheck:
        try:
            record = manifest.subjects[sid]
        except CacheError as e:
            return SubjectCheck([Problem(str(e).removeprefix(f"{cache}: subject {sid}: "), sid)])
        check = verify_subject(cache, record, manifest.num_labels, manifest.settings.layout == "shards")
        check.record = record
        return check

    checks: dict[str, SubjectCheck] = {}
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for done, (sid, check) in enumerate(zip(ids, pool.map(check_one, ids)), 1):
            checks[sid] = check
            report.problems += check.problems
            report.chunks += check.chunks
            if progress:
                progress(done, len(ids), sid)
    report.problems += _check_manifest(cache, manifest, checks)
    report.leftovers = [p.relative_to(cache).as_posix() for p in leftovers(cache, manifest)]
    return report

"""The slice index of a new version, from the previous one plus the subjects that changed.

The index holds, per slice, what the sampler needs (foreground count, present labels) and, per subject, what the
dataset statistics need (voxels per label, voxel volume, original spacing) plus the summed foreground HU
histogram. A subject whose folder is the same as in the previous version keeps its rows, copied from the previous
index; only new or changed subjects' folders are opened. The histogram total is updated exactly (integers): the
histograms of subjects that left are subtracted and those of subjects that arrived are added; when one that left
cannot be read, every subject's is summed again (statistics.summed_histogram), as before.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import store
from .manifest import Manifest
from .records import Records, Row, SubjectRecord
from .statistics import HIST_BINS, original_spacing, summed_histogram


def _previous_index(cache: Path, previous: Manifest | None) -> store.SliceIndex | None:
    """The previous version's index if it reads and carries the per-subject arrays (else everything is read)."""
    if previous is None or previous.slice_index is None:
        return None
    try:
        index = store.read_slice_index(cache, previous.slice_index)
    except Exception:  # noqa: BLE001  (any damage: build it again from the subjects; verify names the damage)
        return None
    complete = all(getattr(index, name) is not None for name in store.SUBJECT_ARRAYS)
    return index if complete and len(index.subjects) == len(previous.subjects) else None


def _subject_rows(record: SubjectRecord, num_labels: int) -> tuple[np.ndarray, float, np.ndarray]:
    voxels = np.zeros(num_labels, dtype=np.int64)
    n = min(num_labels, len(record.label_voxels))
    voxels[:n] = record.label_voxels[:n]
    thickness, in_plane = original_spacing(record.geometry)
    return voxels, float(np.prod(record.spacing)) / 1000, np.array([thickness, *in_plane[:2]], dtype=np.float64)


def updated_index(cache: Path, previous: Manifest | None, subjects: Records, num_labels: int,
                  notes: list[str]) -> tuple[store.SliceIndex, bool]:
    """(the index of `subjects`, whether it is the previous version's unchanged). Reads only the subjects whose
    folder is not the previous version's."""
    cache = Path(cache)
    table = subjects.table
    ids = tuple(sorted(table))
    old = _previous_index(cache, previous)
    old_rows: dict[str, Row] = previous.subjects.table if old is not None else {}
    old_pos = {sid: i for i, sid in enumerate(old.subjects)} if old is not None else {}
    kept = {sid for sid in ids if sid in old_pos and old_rows.get(sid) is not None
            and old_rows[sid].path == table[sid].path}
    if old is not None and len(kept) == len(ids) == len(old.subjects) and old.present.shape[1:] == (num_labels,):
        return old, True
    if old is not None and old.present.shape[1:] != (num_labels,):
        old, kept, old_pos = None, set(), {}
    starts = np.searchsorted(old.subject, np.arange(len(old.subjects) + 1)) if old is not None else None
    fg, present, voxels, volume, spacing = [], [], [], [], []
    for sid in ids:
        if sid in kept:
            i = old_pos[sid]
            fg.append(old.foreground[starts[i]:starts[i + 1]])
            present.append(old.present[starts[i]:starts[i + 1]])
            voxels.append(old.label_voxels[i])
            volume.append(old.volume_ml[i])
            spacing.append(old.original_spacing[i])
            continue
        group = store.open_subject(cache, table[sid].path)
        fg.append(np.asarray(group["foreground"][...]))
        present.append(np.asarray(group["present"][...]))
        v, ml, sp = _subject_rows(subjects[sid], num_labels)
        voxels.append(v)
        volume.append(ml)
        spacing.append(sp)
    counts = np.array([len(f) for f in fg], dtype=np.int64)
    n = int(counts.sum())
    firsts = np.repeat(np.concatenate([[0], np.cumsum(counts)[:-1]]), counts) if ids else np.zeros(0, np.int64)
    index = store.SliceIndex(
        ids, np.repeat(np.arange(len(ids), dtype=np.int32), counts),
        (np.arange(n, dtype=np.int64) - firsts).astype(np.int32),
        np.concatenate(fg).astype(np.int32) if ids else np.zeros(0, np.int32),
        np.concatenate(present).astype(bool) if ids else np.zeros((0, num_labels), bool),
        label_voxels=np.stack(voxels) if ids else np.zeros((0, num_labels), np.int64),
        volume_ml=np.array(volume, dtype=np.float64), original_spacing=np.stack(spacing) if ids
        else np.zeros((0, 3), np.float64),
        histogram=_histogram(cache, old, old_rows, kept, table, notes))
    return index, False


def _histogram(cache: Path, old: store.SliceIndex | None, old_rows: dict[str, Row], kept: set[str],
               table: dict[str, Row], notes: list[str]) -> np.ndarray:
    """The summed foreground histogram of `table`'s subjects: the previous total, less those that left, plus
    those that arrived; all summed again when a leaving subject's histogram cannot be read exactly."""
    arrived = [row for sid, row in table.items() if sid not in kept]
    if old is not None:
        total = old.histogram.astype(np.int64, copy=True)
        for sid in (s for s in old.subjects if s not in kept):
            hist = _exact_histogram(cache, old_rows[sid])
            if hist is False:
                break
            if hist is not None:
                total -= hist
        else:
            total += summed_histogram(cache, arrived, notes)
            if total.min(initial=0) >= 0:
                return total
    return summed_histogram(cache, table.values(), notes)


def _exact_histogram(cache: Path, row: Row) -> np.ndarray | None | bool:
    """A leaving subject's stored histogram (None: it was written without one, so it added nothing); False when it
    is gone or does not count the subject's labelled voxels (then the total cannot be corrected by it)."""
    if not store.subject_exists(cache, row.path):
        return False
    try:
        hist = store.read_histogram(cache, row.path)
    except Exception:  # noqa: BLE001
        return False
    if hist is not None and (hist.shape != (HIST_BINS,) or int(hist.sum()) != row.labelled):
        return False
    return hist

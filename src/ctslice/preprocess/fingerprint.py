"""What changed in a dataset since its cache was built.

A file is unchanged when its size and modification time match the manifest (the fast path); when either differs
it is hashed again, so a file that was only touched (same bytes, new time) is not treated as modified. The fast path
needs no record file: the manifest's table keeps a digest of each subject's file names, sizes and times
(records.stat_digest), compared with one stat per file; only a subject whose digest differs has its record read.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..cache.manifest import Manifest
from ..cache.records import current_stat_digest
from ..errors import CacheError
from .sources import Dataset

_BLOCK = 1 << 20


class NotRegularFile(OSError):
    """A FIFO, device or folder where a NIfTI file should be: reading it could hang or never end."""


def _open_regular(path: Path) -> tuple[int, os.stat_result]:
    # O_NONBLOCK: opening a FIFO does not wait for a writer. Links are followed (datasets are often linked in),
    # but what they lead to must be a regular file.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise NotRegularFile(f"not a regular file (a FIFO, device or folder): {path}")
    return fd, st


def _sha256_fd(fd: int) -> str:
    digest = hashlib.sha256()
    with open(fd, "rb", closefd=True) as f:
        while block := f.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    fd, _ = _open_regular(path)
    return _sha256_fd(fd)


def file_fingerprint(path: Path) -> dict[str, Any]:
    fd, st = _open_regular(path)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": _sha256_fd(fd)}


def subject_key(settings_hash: str, files: dict[str, dict[str, Any]]) -> str:
    """Equal keys <=> same settings and same source bytes <=> same cached arrays."""
    contents = {name: f["sha256"] for name, f in sorted(files.items())}
    return hashlib.sha256(json.dumps([settings_hash, contents]).encode()).hexdigest()


@dataclass
class Changes:
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    modified: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    touched: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    """Unchanged subjects whose files only got a new time: subject -> refreshed fingerprints."""
    settings_changed: bool = False

    @property
    def up_to_date(self) -> bool:
        return not (self.added or self.removed or self.modified or self.settings_changed)


def _same_files(root: Path, recorded: dict[str, dict[str, Any]], files: tuple[str, ...]
                ) -> tuple[bool, dict[str, dict[str, Any]] | None]:
    """(unchanged?, refreshed fingerprints if some file was only touched)."""
    if set(files) != set(recorded):
        return False, None
    refreshed, touched = {}, False
    for name in files:
        old = recorded[name]
        try:
            st = (root / name).stat()
            if st.st_size == old["size"] and st.st_mtime_ns == old["mtime_ns"] and stat.S_ISREG(st.st_mode):
                refreshed[name] = old
                continue
            if st.st_size != old["size"] or sha256_file(root / name) != old["sha256"]:
                return False, None
        except OSError:
            return False, None
        refreshed[name] = {**old, "mtime_ns": st.st_mtime_ns}
        touched = True
    return True, refreshed if touched else None


def compare(dataset: Dataset, manifest: Manifest | None, settings_hash: str) -> Changes:
    """Classify the dataset's subjects against the cache's manifest."""
    changes = Changes(settings_changed=manifest is not None and manifest.settings.hash != settings_hash)
    recorded = manifest.subjects.table if manifest else {}
    present = {s.id for s in dataset.subjects} | {p.subject for p in dataset.problems}
    changes.removed = sorted(set(recorded) - present)
    for source in dataset.subjects:
        row = recorded.get(source.id)
        if row is None:
            changes.added.append(source.id)
            continue
        if current_stat_digest(dataset.root, source.files) == row.stat:  # every file as recorded: no record read
            changes.unchanged.append(source.id)
            continue
        try:
            files = manifest.subjects[source.id].files
        except CacheError:  # its record file is damaged or gone: compute the subject again
            changes.modified.append(source.id)
            continue
        same, refreshed = _same_files(dataset.root, files, source.files)
        if not same:
            changes.modified.append(source.id)
            continue
        changes.unchanged.append(source.id)
        if refreshed:
            changes.touched[source.id] = refreshed
    # a subject that is now unreadable at discovery (e.g. its CT was deleted) is modified, not removed
    changes.modified += sorted(p.subject for p in dataset.problems if p.subject in recorded)
    changes.modified.sort()
    return changes

"""Bytes and files under a path: what `cache info` shows, and what each subject's table row keeps so that it is
not walked again (records.py)."""

from __future__ import annotations

import os
import stat
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class FolderSize:
    files: int = 0
    bytes: int = 0
    """Sum of the files' sizes: what the codecs produced."""
    disk_bytes: int = 0
    """Blocks allocated on disk (small chunk files round up to the filesystem's block size)."""

    def __add__(self, other: FolderSize) -> FolderSize:
        return FolderSize(self.files + other.files, self.bytes + other.bytes, self.disk_bytes + other.disk_bytes)


def folder_size(path: Path) -> FolderSize:
    """Files and bytes under `path` (a file counts as itself; a missing path as nothing)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return FolderSize()
    if not (stat.S_ISDIR(st.st_mode) or (stat.S_ISLNK(st.st_mode) and os.path.isdir(path))):  # links followed
        return FolderSize(1, st.st_size, st.st_blocks * 512)
    total = FolderSize()
    with os.scandir(path) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                total += folder_size(Path(entry.path))
            else:
                s = entry.stat(follow_symlinks=False)
                total += FolderSize(1, s.st_size, s.st_blocks * 512)
    return total


def files_size(folder: Path, names: Collection[str]) -> FolderSize:
    """Files and bytes of the entries of `folder` named in `names` (a set: one listing of the folder and one stat
    each, for the record files of 10,000 subjects; entries that are folders are walked)."""
    files = size = disk = 0
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name not in names:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    sub = folder_size(Path(entry.path))
                    files, size, disk = files + sub.files, size + sub.bytes, disk + sub.disk_bytes
                    continue
                s = entry.stat(follow_symlinks=False)
                files, size, disk = files + 1, size + s.st_size, disk + s.st_blocks * 512
    except (FileNotFoundError, NotADirectoryError):
        pass
    return FolderSize(files, size, disk)


def total_size(sizes: Iterable[list[int]]) -> FolderSize:
    """The sum of [files, bytes, disk bytes] triples (the subjects' table rows)."""
    files = size = disk = 0
    for f, b, d in sizes:
        files, size, disk = files + f, size + b, disk + d
    return FolderSize(files, size, disk)

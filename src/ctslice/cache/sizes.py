"""Bytes and files under a path: what `cache info` shows, and what each subject's table row keeps so that it is
not walked again (records.py)."""

from __future__ import annotations

import os
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
    if not os.path.isdir(path):
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

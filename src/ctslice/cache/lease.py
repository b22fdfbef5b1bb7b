"""Reader leases: a version of the cache stays on disk while a reader that opened it is alive.

    CACHE/.readers/<token>.json      one per version a preprocess run wrote: {"folders": [its subject folders,
                                     record files and slice index]}; <token> is a hash of those
                                     (`version_token`)

A reader takes a *shared* flock on its version's file and holds the descriptor open for as long as it lives
(cache/reader.py); the kernel drops the lock when the process ends, SIGKILL included, so a dead reader never
keeps a version forever. At the end of a run (holding the cache's write lock) the writer tries an *exclusive,
non-blocking* flock on the file of every version other than the current and the previous one
(`reclaim_versions`): where that fails a reader still uses it, and its folders are kept until a later run finds it
free; where it succeeds the version is no reader's, its folders may go, and its file is removed while still locked,
so a reader arriving then finds its lock on a removed file and says the cache was updated.

Why flock and not, say, a list of reader pids: the kernel releases it on every kind of exit and it costs the
reader one open descriptor; a pid file would need liveness checks and cleanup of crashed readers. Why per version
and not per folder: one descriptor per reader, however many subjects.

Lease files are written by the writer, so a reader needs no write permission (flock works on a read-only
descriptor). A cache written before leases existed has none: its readers read without one and keep the older
rule (the previous version stays one more run).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import CacheError
from ..files import write_atomic
from . import layout
from .manifest import Manifest

_FILE = re.compile(r"([0-9a-f]{16})\.json")
_TEMP = re.compile(r"\.?[0-9a-f]{16}\.json\.\d+\.tmp")  # files.write_atomic's (older: without the dot)
_LIMIT = 64 << 20  # a lease file lists folder names: far below this for any dataset


def version_folders(manifest: Manifest) -> list[str]:
    """The folders a version reads: its subject folders and record files, and its slice index."""
    rows = manifest.subjects.table.values()
    folders = sorted(r.path for r in rows) + sorted(getattr(r, "record", None) or "" for r in rows)
    return [f for f in folders if f] + ([manifest.slice_index] if manifest.slice_index else [])


def version_token(manifest: Manifest) -> str:
    return hashlib.sha256("\n".join(version_folders(manifest)).encode()).hexdigest()[:16]


def _path(cache: Path, token: str) -> Path:
    return Path(cache) / layout.READERS_DIR / f"{token}.json"


def record_version(cache: Path, manifest: Manifest) -> None:
    """Writer, before the manifest naming this version is written: the version's lease file (once)."""
    path = _path(cache, version_token(manifest))
    if layout.is_regular(path):
        return
    if os.path.lexists(path.parent):
        layout.inside(cache, layout.READERS_DIR)  # refuses a link leading out of the cache
    else:
        path.parent.mkdir()
    # durable: the manifest that names this version is, and a reader needs the lease file of what it names
    write_atomic(path, json.dumps({"folders": version_folders(manifest)}), durable=True)


class Lease:
    """A shared lock on one version's lease file, held until `close` (or the process ends)."""

    def __init__(self, fd: int):
        self.fd = fd

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing the last descriptor releases the lock
            self.fd = -1

    def __del__(self) -> None:
        self.close()


class VersionGone(CacheError):
    """The version a reader is opening is being removed, or already was: open the cache again."""


def take_lease(cache: Path, manifest: Manifest) -> Lease | None:
    """Hold `manifest`'s version for this reader. None when there is no lease to take: no lease file for it (a
    cache written before leases existed), or one that cannot be opened or locked here (permissions, a filesystem
    without flock); the reader then reads without one. Raises VersionGone when the version is being removed or
    already was."""
    path = _path(cache, version_token(manifest))
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        same = os.path.samestat(os.fstat(fd), os.lstat(path))
    except (BlockingIOError, FileNotFoundError):
        same = False
    except OSError:
        os.close(fd)
        return None
    if not same:  # a writer holds it to remove the version, or already removed it
        os.close(fd)
        raise VersionGone(updated_message(cache, "the version it opened was replaced and removed"))
    return Lease(fd)


def updated_message(cache: Path, what: str) -> str:
    return (f"{cache}: the cache was updated or removed while reading ({what}); restart (open the cache again) "
            "to read its current version")


@contextmanager
def reclaim_versions(cache: Path, keep: Iterable[Manifest | None]) -> Iterator[set[str]]:
    """Writer, with the cache lock held: yields the folders that readers still hold (besides `keep`'s versions),
    which the caller must not delete. Every other version's lease file is locked exclusively for the duration
    (no reader can take it meanwhile) and removed at the end, after the caller deleted its folders."""
    folder = Path(cache) / layout.READERS_DIR
    skip = {version_token(m) for m in keep if m is not None}
    held: set[str] = set()
    free: list[tuple[Path, int]] = []
    try:
        names = sorted(os.listdir(folder)) if folder.is_dir() and not folder.is_symlink() else []
        for name in names:
            if _TEMP.fullmatch(name):  # a writer killed while writing one (the cache lock makes it ours)
                (folder / name).unlink(missing_ok=True)
            match = _FILE.fullmatch(name)
            if not match or match.group(1) in skip:
                continue
            try:
                fd = os.open(folder / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # a reader holds this version
                held.update(_folders(folder / name, fd))
                os.close(fd)
                continue
            free.append((folder / name, fd))
        yield held
        for path, _ in free:
            path.unlink(missing_ok=True)  # still locked: a reader that opened it sees a removed file
    finally:
        for _, fd in free:
            os.close(fd)


def _folders(path: Path, fd: int) -> set[str]:
    """A held version's folders, each checked to be a name the cache gives (the file is untrusted input)."""
    try:
        data = json.loads(os.read(fd, _LIMIT))
        folders = data["folders"]
    except (OSError, ValueError, KeyError, TypeError):
        return set()
    good = set()
    for rel in folders if isinstance(folders, list) else ():
        for kind in (layout.SUBJECTS_DIR, layout.INDEX_DIR, layout.RECORDS_DIR):
            try:
                good.add(layout.check_relative(rel, kind, str(path)))
            except CacheError:
                pass
    return good

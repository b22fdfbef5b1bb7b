"""What a cache folder holds and which of it is the cache's own: the one place that decides what may be
created, read and deleted there.

    CACHE/.ctslice-cache                 marker: this folder is a ctslice cache (written before anything else)
    CACHE/manifest.json                  the contract (manifest.py)
    CACHE/subjects/<id>-<key16>/         zarr group per subject (store.py)
    CACHE/records/<id>-<sha16>.json      one subject's full record, named by the hash of its bytes (records.py)
    CACHE/slice_index/<token12>/         zarr group: the consolidated slice index (store.py)
    CACHE/.staging/                      subjects being written (moved into subjects/ when complete)
    CACHE/.lock                          held by the one process writing the cache
    CACHE/.readers/<token>.json          reader leases: one per version, locked by its readers (lease.py)
    CACHE/zarr.json, label_map.json,     root files written with the manifest
    CACHE/splits.csv

Paths read from a manifest are untrusted input: `check_relative` accepts only the names the cache itself gives
(`subjects/<name>`, `slice_index/<name>`, `records/<name>`), and `inside` refuses anything whose real path
(symbolic links followed) leaves the cache. Deletion goes through `remove_owned`, which applies both checks again.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
from pathlib import Path

from ..errors import CacheError
from ..files import FileTooLarge, NotRegularFile, read_bounded
from .names import SAFE_NAME

MARKER_NAME = ".ctslice-cache"
MANIFEST_NAME = "manifest.json"
LOCK_NAME = ".lock"
SUBJECTS_DIR = "subjects"
INDEX_DIR = "slice_index"
RECORDS_DIR = "records"
STAGING_DIR = ".staging"
READERS_DIR = ".readers"
# Written beside the manifest with each manifest write, for people who open the cache by hand (and for plain
# zarr: the root and subjects/ are zarr v3 groups); the manifest stays the contract.
ZARR_JSON = "zarr.json"
LABEL_MAP_NAME = "label_map.json"
SPLITS_NAME = "splits.csv"
MIRROR_NAME = ".ctslice-mirror.json"  # a mirror of a cache on object storage: which store (cache/mirror.py)

OWNED_ROOT_ENTRIES = frozenset({
    MARKER_NAME, MANIFEST_NAME, LOCK_NAME, SUBJECTS_DIR, INDEX_DIR, RECORDS_DIR, STAGING_DIR, READERS_DIR,
    ZARR_JSON, LABEL_MAP_NAME, SPLITS_NAME, MIRROR_NAME,
})
"""Root entries the cache creates; `clean` removes these and nothing else. Add new root files here."""
OWNED_SUBJECTS_FILES = frozenset({ZARR_JSON})
"""Files of subjects/ itself (its zarr group metadata), besides the subject folders."""

_SUBJECT_NAME = re.compile(SAFE_NAME.pattern + r"-[0-9a-f]{16}")  # <subject id>-<key16>
_INDEX_NAME = re.compile(r"[0-9a-f]{12}")
_RECORD_NAME = re.compile(SAFE_NAME.pattern + r"-[0-9a-f]{16}\.json")  # <subject id>-<sha16 of its bytes>.json
_RECORD_TEMP = re.compile(r"\." + _RECORD_NAME.pattern + r"\.\d+\.tmp")  # files.write_atomic's, left by a kill
# Root files are written as .<name>.<pid>.tmp (files.write_atomic), then renamed: a crash can leave such a
# temporary name behind.
_ROOT_FILES = sorted(OWNED_ROOT_ENTRIES - {SUBJECTS_DIR, INDEX_DIR, RECORDS_DIR, STAGING_DIR, READERS_DIR,
                                           LOCK_NAME, MARKER_NAME, MIRROR_NAME})
_TEMP_FILE = re.compile(r"\.(" + "|".join(map(re.escape, _ROOT_FILES)) + r")\.\d+\.tmp")
_FOLDER_NAMES = {SUBJECTS_DIR: _SUBJECT_NAME, INDEX_DIR: _INDEX_NAME, RECORDS_DIR: _RECORD_NAME}


def chunk_key(array: str, *coords: int) -> str:
    """Relative path of a chunk file inside a zarr group (zarr v3 default chunk key encoding, '/' separated).
    Slice z of a (S, H, W) array in (1, H, W) chunks is chunk_key(array, z, 0, 0)."""
    return f"{array}/c/" + "/".join(map(str, coords))


def is_owned_name(folder: str, name: str) -> bool:
    """Is `name` an entry of subjects/, slice_index/ or records/ that the cache itself creates?"""
    return bool(_FOLDER_NAMES[folder].fullmatch(name))


def is_temp_record(name: str) -> bool:
    """A record file's temporary name (a run killed while writing it)."""
    return bool(_RECORD_TEMP.fullmatch(name))


def is_temp_manifest(name: str) -> bool:
    """A temporary name of a root file (the manifest and the other root files written with it)."""
    return bool(_TEMP_FILE.fullmatch(name))


def check_relative(rel: object, folder: str, what: str) -> str:
    """A path from the manifest: must be exactly `<folder>/<a name the cache gives>`, nothing else."""
    if not isinstance(rel, str):
        raise CacheError(f"{what}: path {rel!r} is not a string")
    parent, _, name = rel.partition("/")
    if parent != folder or not is_owned_name(folder, name):
        raise CacheError(f"{what}: path {rel!r} is not a {folder}/ entry of the cache (absolute, '..' or foreign "
                         "paths are refused)")
    return rel


def inside(cache: Path, rel: str) -> Path:
    """cache/rel, after checking that its real path (links followed) lies inside the cache's real path."""
    root = os.path.realpath(cache)
    path = os.path.realpath(os.path.join(root, rel))
    if os.path.commonpath([root, path]) != root or path == root:
        raise CacheError(f"{cache}: {rel} leads outside the cache (symbolic link?); refused")
    return Path(cache) / rel


def inside_all(cache: Path, rels: list[str]) -> None:
    """`inside` for many entries of a few folders (subjects/, records/) at the cost of one listing of each folder:
    a folder's real path is taken once, and an entry that is not a link lies where its folder does (a link is
    checked by its real path; the listing's entry types tell links, without a stat per entry). Missing entries
    pass: they are found missing where they are used."""
    links: dict[str, set[str]] = {}
    for rel in rels:
        parent, _, name = rel.partition("/")
        if parent not in links:
            links[parent] = _links_in(cache, parent)
        if name in links[parent]:
            inside(cache, rel)


def _links_in(cache: Path, folder: str) -> set[str]:
    """Names of the symbolic links in cache/folder (none when it does not exist), its own real path checked."""
    if not os.path.lexists(os.path.join(cache, folder)):
        return set()
    try:
        with os.scandir(inside(cache, folder)) as entries:
            return {e.name for e in entries if e.is_symlink()}
    except (FileNotFoundError, NotADirectoryError):
        return set()


def is_marked(cache: Path) -> bool:
    return (Path(cache) / MARKER_NAME).is_file()


def _remove_entry(path: Path, errors: list[str]) -> None:
    def failed(_fn, p, exc_info) -> None:
        errors.append(f"{p}: {getattr(exc_info[1], 'strerror', None) or exc_info[1]}")

    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, onerror=failed)  # rmtree never follows links inside
        else:
            path.unlink(missing_ok=True)
    except OSError as e:
        errors.append(f"{path}: {e.strerror or e}")


def _is_owned(parts: list[str]) -> bool:
    if len(parts) == 1:
        return parts[0] in OWNED_ROOT_ENTRIES or is_temp_manifest(parts[0])
    if len(parts) != 2:
        return False
    folder, name = parts
    if folder == STAGING_DIR:  # anything a writer staged, but never '.' or '..' (the cache or its parent)
        return name not in ("", ".", "..")
    if folder == SUBJECTS_DIR and name in OWNED_SUBJECTS_FILES:
        return True
    if folder == RECORDS_DIR and is_temp_record(name):
        return True
    return folder in _FOLDER_NAMES and is_owned_name(folder, name)


def _carries_mark(path: Path, parts: list[str]) -> bool:
    """A zarr group below subjects/, slice_index/ or .staging/ must carry ctslice's mark (cache/marks.py) to be
    deleted: its name alone does not prove the cache wrote it. A link in its place is only a link (it goes)."""
    from . import marks

    if len(parts) != 2 or parts[0] not in (SUBJECTS_DIR, INDEX_DIR, RECORDS_DIR, STAGING_DIR) or path.is_symlink():
        return True
    if parts[0] == SUBJECTS_DIR and parts[1] in OWNED_SUBJECTS_FILES:
        return marks.is_root_group_doc(path)
    if parts[0] == RECORDS_DIR:  # its name carries the hash of its bytes; a temporary one is ours by its name
        return is_temp_record(parts[1]) or marks.is_record_file(path)
    return marks.is_owned_entry(parts[0], path)


def remove_owned(cache: Path, rel: str) -> str | None:
    """Delete cache/rel, an entry the cache created (a root entry, or a name it gives under subjects/ or
    slice_index/, carrying ctslice's mark). rel is checked again here, so a caller's mistake cannot reach outside.
    Returns None when it is gone, else why not."""
    parts = rel.split("/")
    if not _is_owned(parts):
        return f"{rel}: not an entry ctslice creates; kept"
    path = Path(cache) / rel
    if os.path.lexists(path):
        if len(parts) == 2:  # the entry itself may be a link (then only the link goes); its parent must not be
            try:
                inside(cache, parts[0])
            except CacheError as e:
                return str(e)
            if not _carries_mark(path, parts):
                return f"{path}: named like a cache entry but without ctslice's mark (not written by ctslice); kept"
        errors: list[str] = []
        if rel in (*_FOLDER_NAMES, STAGING_DIR) and path.is_dir() and not path.is_symlink():
            try:  # subjects/, slice_index/ or records/ itself: only once emptied of the entries the cache created
                path.rmdir()
            except OSError:
                return f"{path}: holds entries ctslice did not create; kept"
            return None
        _remove_entry(path, errors)
        if os.path.lexists(path):
            return "; ".join(errors) or f"{path}: could not be removed"
    return None


def is_regular(path: Path | str) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def check_regular_tree(folder: Path, what: str) -> None:
    """Every entry under `folder` is a folder or a regular file (no links, FIFOs or devices), so that zarr,
    which opens files with plain reads, cannot hang on a FIFO or read /dev/zero forever."""
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            mode = os.lstat(path).st_mode
            if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
                raise CacheError(f"{what}: {path} is not a regular file (a link, FIFO or device); the cache is "
                                 "damaged (run `ctslice cache verify`)")


def read_regular(path: Path | str, limit: int, what: str) -> bytes:
    """A whole regular file of at most `limit` bytes (files.read_bounded), never through a final symbolic link;
    a CacheError naming `what` otherwise (FileNotFoundError passes as it is)."""
    try:
        return read_bounded(path, limit, follow_links=False)
    except FileNotFoundError:
        raise
    except (NotRegularFile, FileTooLarge) as e:
        raise CacheError(f"{what}: {e}") from None
    except OSError as e:
        raise CacheError(f"{what}: cannot open {path} ({e.strerror or e}; a symbolic link?)") from None


def open_for_reading(path: str, what: str, where: str = "") -> int:
    """A descriptor of the cache file `path` (a slice's chunk file, a shard), opened as the readers need it:
    O_NONBLOCK, so a FIFO in its place opens at once and reads as empty (no hang); O_NOFOLLOW, since the cache
    never holds links, so a linked file (to /dev/zero, say) is refused. FileNotFoundError passes through (the
    caller tells damage from an update); any other failure is a CacheError naming `where` and `what`."""
    try:
        return os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise
    except OSError as e:
        raise CacheError(f"{where}: cannot open {what} {path} ({e.strerror}; a link or special file is damage, run "
                         "`ctslice cache verify`)") from None

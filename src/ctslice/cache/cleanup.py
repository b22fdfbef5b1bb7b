"""Removing things: leftovers (what the manifest no longer references; deleted at the end of every preprocess
run, which holds the cache lock, and by `ctslice cache clean --leftovers`) and whole caches (`cache clean`)."""

from __future__ import annotations

import shutil
from pathlib import Path

from ..errors import CacheError
from . import store
from .lock import LOCK_NAME, cache_lock
from .manifest import LABEL_MAP_NAME, MANIFEST_NAME, SPLITS_NAME, ZARR_JSON, Manifest


def leftovers(cache: Path, manifest: Manifest) -> list[Path]:
    """Files and folders the manifest does not reference: interrupted runs' staging folders, replaced or removed
    subjects, old slice indexes, stray temporary manifests."""
    cache = Path(cache)
    referenced = {r.path for r in manifest.subjects.values()} | {manifest.slice_index}
    found = []
    for folder in (store.SUBJECTS_DIR, store.INDEX_DIR):
        if (cache / folder).is_dir():
            found += [p for p in sorted((cache / folder).iterdir())
                      if f"{folder}/{p.name}" not in referenced and p.name != ZARR_JSON]
    if (cache / store.STAGING_DIR).exists():
        found.append(cache / store.STAGING_DIR)
    for name in (MANIFEST_NAME, LABEL_MAP_NAME, SPLITS_NAME, ZARR_JSON):
        found += sorted(cache.glob(f".{name}.*.tmp"))
    return found


def remove_leftovers(cache: Path, manifest: Manifest) -> list[Path]:
    """Delete what `leftovers` lists (call with the cache lock held)."""
    gone = leftovers(cache, manifest)
    for path in gone:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return gone


# Entries a cache folder can hold before its first manifest is written (a run killed at its very start).
_PRE_MANIFEST = {".lock", ".staging"}


def check_removable(cache: Path) -> None:
    """Raise unless `cache` is a ctslice cache (has manifest.json), an empty folder or one only a run killed at
    its very start left behind: `clean` deletes recursively, so it must never get a wrong folder."""
    if cache.is_symlink() or not cache.is_dir():
        raise CacheError(f"{cache}: not a folder (or a symbolic link); nothing removed")
    names = {p.name for p in cache.iterdir()}
    if MANIFEST_NAME not in names and not names <= _PRE_MANIFEST:
        raise CacheError(f"{cache}: has no {MANIFEST_NAME} and is not empty, so it is not a ctslice cache; "
                         "nothing removed")


def remove_cache(cache: Path) -> None:
    """Under the lock (no preprocess may be writing it), delete everything but the manifest, then the manifest:
    a clean that is interrupted leaves a folder `clean` still recognises. The lock file goes last."""
    with cache_lock(cache):
        for path in sorted(cache.iterdir()):
            if path.name in (LOCK_NAME, MANIFEST_NAME):
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        (cache / MANIFEST_NAME).unlink(missing_ok=True)
    (cache / LOCK_NAME).unlink(missing_ok=True)
    cache.rmdir()

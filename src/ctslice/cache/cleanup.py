"""Removing things, only ever entries the cache itself created (layout.remove_owned checks each path again).

- Leftovers: subject folders and slice indexes the manifest no longer references, interrupted runs' staging
  folders and temporary manifests. A preprocess run (holding the cache lock) removes them at its end, except
  those the *previous* manifest referenced (one generation of grace) and those of older versions that a reader
  still holds (lease.py): readers keep reading the version they opened. `ctslice cache clean --leftovers` removes
  them all.
- Whole caches (`cache clean`): the cache's own entries, then the folder if nothing else is left in it.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CacheError
from . import layout
from .lock import cache_lock
from .manifest import Manifest
from .owner import is_cache, is_empty


def _referenced(manifest: Manifest | None) -> set[str]:
    if manifest is None:
        return set()
    return {r.path for r in manifest.subjects.values()} | {manifest.slice_index}


def leftovers(cache: Path, manifest: Manifest, keep: Manifest | None = None, held: Collection[str] = ()
              ) -> list[Path]:
    """Entries the cache created that `manifest` (and `keep`, if given) does not reference, nor `held` (folders
    that readers hold) lists. Unknown entries (names the cache never gives) are not leftovers: they are not the
    cache's to delete."""
    cache = Path(cache)
    referenced = _referenced(manifest) | _referenced(keep) | set(held)
    found = []
    for folder in (layout.SUBJECTS_DIR, layout.INDEX_DIR):
        if (cache / folder).is_dir() and not (cache / folder).is_symlink():
            found += [p for p in sorted((cache / folder).iterdir())
                      if layout.is_owned_name(folder, p.name) and f"{folder}/{p.name}" not in referenced]
    if os.path.lexists(cache / layout.STAGING_DIR):
        found.append(cache / layout.STAGING_DIR)
    found += sorted(p for p in cache.iterdir() if layout.is_temp_manifest(p.name))
    return found


@dataclass
class Removal:
    removed: list[Path] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    """Why each entry that should have gone is still there (permissions, busy), or unknown entries left alone."""


def remove_leftovers(cache: Path, manifest: Manifest, keep: Manifest | None = None, held: Collection[str] = ()
                     ) -> Removal:
    """Delete what `leftovers` lists (call with the cache lock held)."""
    result = Removal()
    for path in leftovers(cache, manifest, keep, held):
        problem = layout.remove_owned(cache, path.relative_to(cache).as_posix())
        result.kept.append(problem) if problem else result.removed.append(path)
    return result


def check_removable(cache: Path) -> None:
    """Raise unless `cache` is a ctslice cache or an empty folder: `clean` deletes recursively, so it must never
    get a wrong folder."""
    if cache.is_symlink() or not cache.is_dir():
        raise CacheError(f"{cache}: not a folder (or a symbolic link); nothing removed")
    if not (is_cache(cache) or is_empty(cache)):
        raise CacheError(f"{cache}: has no {layout.MARKER_NAME} or ctslice {layout.MANIFEST_NAME} and is not empty, "
                         "so it is not a ctslice cache; nothing removed")


def remove_cache(cache: Path) -> Removal:
    """Under the lock (no preprocess may be writing it), delete the cache's own entries: inside subjects/ and
    slice_index/ only the names the cache gives, then the rest, the manifest and marker last (an interrupted
    clean leaves a folder `clean` still recognises). The folder itself goes only if nothing else is left."""
    cache = Path(cache)
    result = Removal()

    def remove(rel: str) -> None:
        if not os.path.lexists(cache / rel):
            return
        problem = layout.remove_owned(cache, rel)
        result.kept.append(problem) if problem else result.removed.append(cache / rel)

    with cache_lock(cache):
        for folder in (layout.SUBJECTS_DIR, layout.INDEX_DIR):
            if (cache / folder).is_dir() and not (cache / folder).is_symlink():
                for p in sorted((cache / folder).iterdir()):
                    if layout.is_owned_name(folder, p.name) or (folder == layout.SUBJECTS_DIR
                                                                and p.name in layout.OWNED_SUBJECTS_FILES):
                        remove(f"{folder}/{p.name}")
            remove(folder)  # the folder once empty; a link in its place: only the link goes
        last = (layout.MANIFEST_NAME, layout.MARKER_NAME, layout.LOCK_NAME, layout.SUBJECTS_DIR, layout.INDEX_DIR)
        for p in sorted(cache.iterdir()):
            if p.name not in last and (p.name in layout.OWNED_ROOT_ENTRIES or layout.is_temp_manifest(p.name)):
                remove(p.name)
        remove(layout.MANIFEST_NAME)
        remove(layout.MARKER_NAME)
    remove(layout.LOCK_NAME)
    others = sorted(p.name for p in cache.iterdir())
    result.kept += [f"{cache / name}: left in place (not created by ctslice, or holds such entries)" for name in others
                    if not any(k.startswith(f"{cache / name}") for k in result.kept)]
    if not others:
        cache.rmdir()
    return result

"""Removing things, only ever entries the cache itself created (layout.remove_owned checks each path again, and
the zarr groups' marks: cache/marks.py; root files written beside the manifest go only when they hold what it
wrote there).

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
from . import layout, marks
from .lock import cache_lock
from .manifest import Manifest, load_manifest_json, read_manifest, root_files
from .owner import is_cache, is_empty


def _referenced(manifest: Manifest | None) -> set[str]:
    if manifest is None:
        return set()
    rows = manifest.subjects.table.values()
    return {r.path for r in rows} | {getattr(r, "record", None) for r in rows} | {manifest.slice_index}


def _marked(folder: str, path: Path) -> bool:
    """Does this entry of subjects/, slice_index/ or .staging/ carry ctslice's mark (cache/marks.py)?"""
    if path.is_symlink():
        return True  # a link: only the link goes (remove_owned never follows it)
    return marks.is_owned_entry(folder, path)


def _staged(cache: Path) -> tuple[list[Path], bool]:
    """(marked entries of .staging/, whether they are all it holds)."""
    staging = cache / layout.STAGING_DIR
    if not staging.is_dir() or staging.is_symlink():
        return [], True
    entries = sorted(staging.iterdir())
    marked = [p for p in entries if _marked(layout.STAGING_DIR, p)]
    return marked, len(marked) == len(entries)


def leftovers(cache: Path, manifest: Manifest, keep: Manifest | None = None, held: Collection[str] = ()
              ) -> list[Path]:
    """Entries the cache created that `manifest` (and `keep`, if given) does not reference, nor `held` (folders
    that readers hold) lists. Unknown entries (names the cache never gives, or without its mark) are not
    leftovers: they are not the cache's to delete."""
    cache = Path(cache)
    referenced = _referenced(manifest) | _referenced(keep) | set(held)
    found = []
    for folder in (layout.SUBJECTS_DIR, layout.INDEX_DIR, layout.RECORDS_DIR):
        base = cache / folder
        if base.is_dir() and not base.is_symlink():
            # names, not Paths: subjects/ and records/ hold an entry per subject, nearly all of them referenced
            names = sorted(n for n in os.listdir(base) if f"{folder}/{n}" not in referenced)
            found += [base / n for n in names if (layout.is_owned_name(folder, n) and _marked(folder, base / n))
                      or (folder == layout.RECORDS_DIR and layout.is_temp_record(n))]
    if os.path.lexists(cache / layout.STAGING_DIR):
        staged, only = _staged(cache)
        found += [cache / layout.STAGING_DIR] if only else staged  # all of it (its entries first), or what is ours
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
        rel = path.relative_to(cache).as_posix()
        if rel == layout.STAGING_DIR:  # its entries, each checked, then the folder once empty
            problems = [layout.remove_owned(cache, entry.relative_to(cache).as_posix()) for entry in _staged(cache)[0]]
            if any(problems):
                result.kept += [p for p in problems if p]
                continue
        problem = layout.remove_owned(cache, rel)
        result.kept.append(problem) if problem else result.removed.append(path)
    return result


def _root_files(cache: Path) -> dict[str, str | None]:
    """What label_map.json, splits.csv and zarr.json hold when ctslice wrote them with this cache's manifest
    (None: the manifest cannot tell, so they are kept; {}: no check, the manifest is unreadable but the folder
    carries the cache marker). zarr.json is checked by its mark, not its bytes."""
    try:
        manifest = read_manifest(cache)
    except CacheError:
        try:  # a damaged manifest (wrong checksum) still says what it wrote beside itself
            manifest = Manifest.from_json(load_manifest_json(cache), cache)
        except (CacheError, TypeError, ValueError, AttributeError, KeyError):
            manifest = None
    if manifest is None and layout.is_marked(cache):
        return {}  # the folder's own marker says preprocess created it: its root files go by name, as before
    files = root_files(manifest) if manifest is not None else {}
    return {layout.LABEL_MAP_NAME: files.get(layout.LABEL_MAP_NAME), layout.SPLITS_NAME: files.get(layout.SPLITS_NAME),
            layout.ZARR_JSON: files.get(layout.ZARR_JSON, "")}


def _as_written(path: Path, expected: str | None) -> bool:
    if path.name == layout.ZARR_JSON:
        return not path.is_symlink() and marks.is_root_group_doc(path)
    return marks.same_text(path, expected)


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

    expected = _root_files(cache)
    with cache_lock(cache):
        for folder in (layout.SUBJECTS_DIR, layout.INDEX_DIR, layout.RECORDS_DIR, layout.STAGING_DIR):
            if (cache / folder).is_dir() and not (cache / folder).is_symlink():
                for p in sorted((cache / folder).iterdir()):
                    if (folder == layout.STAGING_DIR or layout.is_owned_name(folder, p.name)
                            or (folder == layout.RECORDS_DIR and layout.is_temp_record(p.name))
                            or (folder == layout.SUBJECTS_DIR and p.name in layout.OWNED_SUBJECTS_FILES)):
                        remove(f"{folder}/{p.name}")  # remove_owned keeps what lacks ctslice's mark
            remove(folder)  # the folder once empty; a link in its place: only the link goes
        last = (layout.MANIFEST_NAME, layout.MARKER_NAME, layout.LOCK_NAME, layout.SUBJECTS_DIR, layout.INDEX_DIR,
                layout.RECORDS_DIR, layout.STAGING_DIR)
        for p in sorted(cache.iterdir()):
            if p.name in expected and not _as_written(p, expected[p.name]):
                result.kept.append(f"{p}: not as ctslice writes it beside this manifest (the user's own?); kept")
            elif p.name not in last and (p.name in layout.OWNED_ROOT_ENTRIES or layout.is_temp_manifest(p.name)):
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

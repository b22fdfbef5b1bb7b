"""Leftovers: what the manifest no longer references. Deleted at the end of every preprocess run (which holds
the cache lock) and by `ctslice cache clean --leftovers`."""

from __future__ import annotations

import shutil
from pathlib import Path

from . import store
from .manifest import Manifest


def leftovers(cache: Path, manifest: Manifest) -> list[Path]:
    """Files and folders the manifest does not reference: interrupted runs' staging folders, replaced or removed
    subjects, old slice indexes, stray temporary manifests."""
    cache = Path(cache)
    referenced = {r.path for r in manifest.subjects.values()} | {manifest.slice_index}
    found = []
    for folder in (store.SUBJECTS_DIR, store.INDEX_DIR):
        if (cache / folder).is_dir():
            found += [p for p in sorted((cache / folder).iterdir()) if f"{folder}/{p.name}" not in referenced]
    if (cache / store.STAGING_DIR).exists():
        found.append(cache / store.STAGING_DIR)
    found += sorted(cache.glob(".manifest.json.*.tmp"))
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

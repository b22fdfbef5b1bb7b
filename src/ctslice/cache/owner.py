"""Which folders are ctslice caches: preprocess writes only into a missing or empty folder or an existing cache, and
`clean` deletes only a cache, so that a mistyped path is never written into or emptied.

A cache is recognised by its marker file (`.ctslice-cache`, written before anything else) or, for caches from
before the marker, by a manifest with ctslice's keys. A folder that holds anything else is refused by name. The
marker makes a cache whose manifest is damaged still recognisable, so `preprocess --force` can rebuild it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .. import __version__
from ..errors import CacheError
from . import layout
from .manifest import load_manifest_json, looks_like_ctslice

# A folder holding only these is as good as empty: a lock file is what a refused or crashed start leaves.
_AS_EMPTY = {layout.LOCK_NAME}


def is_cache(cache: Path) -> bool:
    """Does `cache` carry the marker, or a manifest written by ctslice (even one of another format)?"""
    cache = Path(cache)
    if layout.is_regular(cache / layout.MARKER_NAME):
        return True
    if not layout.is_regular(cache / layout.MANIFEST_NAME):
        return False
    try:
        return looks_like_ctslice(load_manifest_json(cache))
    except CacheError:
        return False


def is_empty(cache: Path) -> bool:
    return {p.name for p in Path(cache).iterdir()} <= _AS_EMPTY


def check_writable(cache: Path) -> None:
    """Raise, before anything is written, unless preprocess may create or update a cache in `cache`."""
    cache = Path(cache)
    if not os.path.lexists(cache):
        return
    if not cache.is_dir():
        raise CacheError(f"{cache}: exists and is not a folder; give --cache a new or empty folder, or a cache")
    if not (is_empty(cache) or is_cache(cache)):
        raise CacheError(f"{cache}: is not empty and is not a ctslice cache (no {layout.MARKER_NAME} or ctslice "
                         f"{layout.MANIFEST_NAME}); refusing to write there. Give --cache a new or empty folder")


def check_apart(data: Path, cache: Path) -> None:
    """The dataset must not lie inside the cache folder, nor the cache inside the dataset folder: cleaning one
    would delete the other, and discovery would take cache folders for subjects."""
    d, c = os.path.realpath(data), os.path.realpath(cache)
    if os.path.commonpath([d, c]) in (d, c):
        where = "is the same folder as" if d == c else ("lies inside" if os.path.commonpath([d, c]) == d
                                                        else "contains")
        raise CacheError(f"cache folder {cache} {where} the dataset folder {data}; put the cache elsewhere")


def mark(cache: Path) -> None:
    """Create the folder (if needed) and its marker file. Its presence is what counts, not its text, so it is
    written in place: a temporary name left by a crash would be an unknown entry that makes the folder foreign."""
    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    marker = cache / layout.MARKER_NAME
    if not layout.is_regular(marker):
        marker.write_text(json.dumps({"ctslice_cache": True, "created_by": __version__}) + "\n")


def _inside(child: str, parent: str) -> bool:
    return os.path.commonpath([child, parent]) == parent


def check_output_apart(out: Path, cache: Path, data_root: str | Path | None, what: str) -> None:
    """An output folder (a training run's, an evaluation's) must not contain the cache or lie inside it, nor lie
    inside the cache's dataset folder: cleaning or updating one would touch the other, and the next preprocess
    would take the output for a subject. `what` names the folder in the message ("the run folder")."""
    real, cache_real = os.path.realpath(out), os.path.realpath(cache)
    if _inside(real, cache_real) or _inside(cache_real, real):
        raise CacheError(f"--out {out}: {what} and the cache {cache} must not contain each other (cleaning or "
                         f"updating one would touch the other); choose another --out")
    if data_root and _inside(real, os.path.realpath(data_root)):
        raise CacheError(f"--out {out}: lies inside the cache's dataset folder {data_root} (the next "
                         f"preprocess would take it for a subject); choose another --out")

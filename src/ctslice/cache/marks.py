"""The marks that prove an entry of a cache folder was written by ctslice, checked before anything is deleted:
a name the cache gives is not enough (issue 15: `cache clean` on a folder holding a copy of a manifest deleted the
user's own `splits.csv`, `zarr.json`, `.staging/...` and a `subjects/x-<hex>/` folder).

- Subject folders (and their staged copies) and slice indexes are zarr groups whose `zarr.json` carries
  `attributes.ctslice` ("subject" / "slice_index"). Groups written before that mark existed are recognised by what
  ctslice always wrote there: a subject's `record` whose id and key give the folder's name, a slice index's list of
  `subjects`.
- Record files (records/<id>-<sha16>.json) are named by the hash of their bytes: only the bytes ctslice wrote
  carry the name.
- The root files written with the manifest are recognised by their content: `zarr.json` is ctslice's group
  document, `label_map.json` and `splits.csv` are what the manifest gives (`derived_root_files`).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from ..errors import CacheError
from .layout import read_regular

SUBJECT = "subject"
SLICE_INDEX = "slice_index"
GROUP_NOTE = "a ctslice slice cache"  # how the root's and subjects/'s zarr.json attributes.ctslice begin
_METADATA_LIMIT = 64 << 20
_STAGED = re.compile(r"(.+)\.\d+\.[0-9a-f]{8}")  # store.write_subject's staging name: <folder>.<pid>.<hex8>


def group_attributes(folder: Path) -> dict[str, Any] | None:
    """The attributes of the zarr group at `folder` (a regular zarr.json of a group), else None."""
    try:
        doc = json.loads(read_regular(Path(folder) / "zarr.json", _METADATA_LIMIT, str(folder)))
    except (OSError, ValueError, CacheError):
        return None
    if not isinstance(doc, dict) or doc.get("node_type") != "group" or not isinstance(doc.get("attributes"), dict):
        return None
    return doc["attributes"]


def _record_names(attrs: dict[str, Any], name: str) -> bool:
    record = attrs.get("record")
    return (isinstance(record, dict) and isinstance(record.get("id"), str) and isinstance(record.get("key"), str)
            and name == f"{record['id']}-{record['key'][:16]}")


def is_subject_group(folder: Path) -> bool:
    """A subject folder ctslice wrote (or its staged copy, named <folder>.<pid>.<hex8>)."""
    attrs = group_attributes(folder)
    if attrs is None:
        return False
    if attrs.get("ctslice") == SUBJECT:
        return True
    staged = _STAGED.fullmatch(folder.name)
    return _record_names(attrs, folder.name) or bool(staged and _record_names(attrs, staged.group(1)))


def is_empty_folder(folder: Path) -> bool:
    """What a kill between creating a group's folder and writing its zarr.json leaves: deleting it loses nothing."""
    try:
        return folder.is_dir() and not folder.is_symlink() and not any(folder.iterdir())
    except OSError:
        return False


def is_owned_entry(folder: str, path: Path) -> bool:
    """May ctslice delete this entry of subjects/, slice_index/ or .staging/ (`folder`)? A marked group of the
    right kind, or an empty folder."""
    if is_empty_folder(path):
        return True
    if folder == "records":
        return is_record_file(path)
    return is_index_group(path) if folder == "slice_index" else is_subject_group(path)


def is_record_file(path: Path) -> bool:
    """A record file ctslice wrote (cache/records.py): its name ends with the hash of its own bytes."""
    stem = path.name.removesuffix(".json")
    try:
        data = read_regular(path, _METADATA_LIMIT, str(path))
    except (OSError, CacheError):
        return False
    return stem.rpartition("-")[2] == hashlib.sha256(data).hexdigest()[:16]


def is_index_group(folder: Path) -> bool:
    attrs = group_attributes(folder)
    return attrs is not None and (attrs.get("ctslice") == SLICE_INDEX or isinstance(attrs.get("subjects"), list))


def is_root_group_doc(path: Path) -> bool:
    """The zarr.json ctslice writes at the cache's root and in subjects/ (manifest.write_manifest)."""
    attrs = group_attributes(path.parent) if path.name == "zarr.json" else None
    return attrs is not None and str(attrs.get("ctslice", "")).startswith(GROUP_NOTE)


def same_text(path: Path, expected: str | None) -> bool:
    """Does the regular file `path` hold exactly `expected`?"""
    if expected is None:
        return False
    try:
        return read_regular(path, len(expected.encode()) + 1, str(path)) == expected.encode()
    except (OSError, CacheError):
        return False

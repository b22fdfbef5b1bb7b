"""The local mirror of a cache on object storage: a normal, marked ctslice cache folder on this machine that
every existing reader and writer works on, kept in step with the store.

    MIRROR/.ctslice-mirror.json    {"url": "s3://bucket/prefix"}: which store it mirrors (no credentials)
    MIRROR/manifest.json, records/, slice_index/<token>/   pulled from the store when a command opens the cache
    MIRROR/subjects/<id>-<key>/    fetched whole, on first use (`fetch_subject`), least recently fetched evicted

- **Reading.** `open` pulls the manifest, the record files the mirror lacks (write-once: named by their hash) and
  the current slice index. A subject's folder is fetched the first time a reader misses one of its chunk files
  (cache/reader.py), whole (every object under its prefix: either zarr layout), into `.staging/` under a name of
  its own and renamed into place, so several DataLoader workers and several runs can fetch at once: one rename
  wins, the others drop their copy.
- **Writing** (preprocess): the plan comes from the pulled bookkeeping and a `stat` of the sources; unchanged
  subjects are not downloaded. Each dask worker writes its subject into the mirror and uploads the folder's
  objects, its root zarr.json last (its completeness marker); the coordinating process then uploads the new
  record files, the new slice index and the root files, and `manifest.json` LAST: one PUT, atomic for readers.
  Superseded objects are deleted after that, except the previous version's (one run of grace, as on disk).
- One writer per store: the write lock is the mirror's, i.e. per machine; run one preprocess per store at a time.

The registry (`remote_of`) maps a mirror folder to its store for this process; the reader carries its Remote to
DataLoader workers by pickling (credentials travel in memory, never to disk).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CacheError
from ..files import write_atomic
from . import layout, marks, store
from .manifest import Manifest, manifest_digest, read_manifest
from .object_store import ObjectStore, is_group_file
from .owner import check_writable, mark

MIRROR_NAME = layout.MIRROR_NAME
_REMOTES: dict[str, "Remote"] = {}


def remote_of(cache: Path) -> "Remote | None":
    """The store `cache` mirrors in this process (None: a plain local cache)."""
    return _REMOTES.get(os.path.realpath(cache)) if _REMOTES else None


@dataclass
class Remote:
    store: ObjectStore
    mirror: Path
    limit_bytes: int = 100 << 30
    """Subject folders kept in the mirror at most (least recently fetched go first)."""
    known: set[str] = field(default_factory=set)
    """Keys (folders, record files, slice index) the store is known to hold complete: those of the manifest
    pulled, and what this process uploaded since."""

    def __getstate__(self) -> dict:
        # workers (dask, DataLoader) get the store and the mirror; `known` could list 10,000s of folders
        return {**self.__dict__, "known": set(), "_sizes": {}}

    # --- Opening ------------------------------------------------------------------------------------------------

    def open(self, writing: bool = False) -> Path:
        """Make the mirror a marked cache folder holding the store's current bookkeeping; register it."""
        self._check_store(writing)
        self._check_mirror()
        self.pull()
        _REMOTES[os.path.realpath(self.mirror)] = self
        return self.mirror

    def _check_store(self, writing: bool) -> None:
        has_marker = self.store.exists(layout.MARKER_NAME)
        if has_marker or not writing and self.store.exists(layout.MANIFEST_NAME):
            return
        if not writing:
            raise CacheError(f"{self.store.url}: no ctslice cache there (no {layout.MANIFEST_NAME}); run "
                             "`ctslice preprocess DATA --cache URL` first")
        if not self.store.is_empty():  # new caches only under an empty prefix (as in an empty folder)
            raise CacheError(f"{self.store.url}: holds objects and no {layout.MARKER_NAME}, so it is not a ctslice "
                             "cache; refusing to write there. Give --cache an empty prefix or a cache")
        self.store.put(layout.MARKER_NAME, b'{"ctslice_cache": true}\n')

    def _check_mirror(self) -> None:
        path = self.mirror / MIRROR_NAME
        if path.is_file():
            try:
                url = json.loads(layout.read_regular(path, 1 << 16, str(self.mirror))).get("url")
            except (OSError, ValueError, AttributeError):
                url = None
            if url != self.store.url:
                raise CacheError(f"{self.mirror}: the local mirror of {url}, not of {self.store.url}; give "
                                 "[storage] local_cache another folder")
            return
        check_writable(self.mirror)
        mark(self.mirror)
        write_atomic(path, json.dumps({"url": self.store.url}) + "\n", durable=False)

    def pull(self) -> Manifest | None:
        """The store's manifest into the mirror, with the record files and slice index it names that the mirror
        lacks. Returns it (None: the store has none yet, or it is damaged: the readers then say so)."""
        data = self.store.get(layout.MANIFEST_NAME)
        local = self.mirror / layout.MANIFEST_NAME
        if data is None:
            if os.path.lexists(local):
                layout.remove_owned(self.mirror, layout.MANIFEST_NAME)
            return None
        if manifest_digest(self.mirror) != hashlib.sha256(data).digest():
            write_atomic(local, data, durable=False)
        try:
            manifest = read_manifest(self.mirror)
        except CacheError:
            return None
        self.pull_bookkeeping(manifest, self.mirror)
        self.known = _referenced(manifest)
        return manifest

    def pull_bookkeeping(self, manifest: Manifest, root: Path) -> None:
        """The record files and slice index `manifest` names that `root` lacks, from the store."""
        records = [r.record for r in manifest.subjects.table.values()]
        missing = [key for key in records if not layout.is_regular(root / key)]
        if missing:
            (root / layout.RECORDS_DIR).mkdir(exist_ok=True)
        for key, body in self.store.get_many(missing):
            if body is not None:
                write_atomic(root / key, body, durable=False)
        if manifest.slice_index and not store.subject_exists(root, manifest.slice_index):
            self._download_folder(manifest.slice_index, root)

    # --- Subjects -------------------------------------------------------------------------------------------------

    def has_subject(self, folder: str) -> bool:
        """Is the subject folder complete in the store (its root zarr.json is uploaded last)?"""
        return folder in self.known or self.store.exists(f"{folder}/zarr.json")

    def fetch_subject(self, folder: str) -> bool:
        """Download a subject folder the mirror lacks; False when it is complete here already or not in the
        store (the caller then reports what is missing)."""
        if store.subject_exists(self.mirror, folder):
            return False
        fetched = self._download_folder(folder)
        if fetched:
            self.evict(keep=folder)
        return fetched

    def _download_folder(self, folder: str, root: Path | None = None) -> bool:
        """Every object under `folder`/ into a fresh staging name, renamed into place (under `root`, default the
        mirror) when complete."""
        root = self.mirror if root is None else root
        layout.check_relative(folder, folder.split("/")[0], self.store.url)  # subjects/ or slice_index/ names only
        objects = self.store.list(f"{folder}/")
        files = {key[len(folder) + 1:] for key, _ in objects}
        if "zarr.json" not in files:
            return False
        staging = root / layout.STAGING_DIR / f"{folder.split('/')[1]}.fetch.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        try:
            for key, body in self.store.get_many(f"{folder}/{rel}" for rel in sorted(files) if is_group_file(rel)):
                if body is None:
                    return False  # deleted meanwhile: a newer version's cleanup
                path = staging / key[len(folder) + 1:]
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(body)
            (root / folder).parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(staging, root / folder)
                os.utime(root / folder)  # when it was fetched: what eviction orders by
            except OSError:
                if not store.subject_exists(root, folder):  # someone else's rename wins; else a real error
                    raise
            return True
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)

    def subject_record(self, folder: str) -> dict | None:
        """The record a complete subject folder in the store carries (its root zarr.json), or None."""
        data = self.store.get(f"{folder}/zarr.json")
        if data is None:
            return None
        attrs = json.loads(data).get("attributes", {})
        return attrs.get("record") if attrs.get("ctslice") == marks.SUBJECT else None

    def upload_folder(self, folder: str) -> None:
        """Every file of a mirror folder to the store, its root zarr.json last (what marks it complete)."""
        root = self.mirror / folder
        rels = sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)
        rels = [rel for rel in rels if is_group_file(rel)]
        self.store.put_many((f"{folder}/{rel}", (root / rel).read_bytes) for rel in rels if rel != "zarr.json")
        self.store.put(f"{folder}/zarr.json", (root / "zarr.json").read_bytes())
        self.known.add(folder)

    def evict(self, keep: str = "") -> None:
        """Delete the least recently fetched subject folders while those in the mirror exceed the bound. Sizes are
        walked once per folder and process (`_sizes`); each call then costs one listing of subjects/."""
        folder = self.mirror / layout.SUBJECTS_DIR
        sizes = self.__dict__.setdefault("_sizes", {})
        try:
            entries = {e.name: e.stat(follow_symlinks=False).st_mtime for e in os.scandir(folder)
                       if e.is_dir(follow_symlinks=False) and layout.is_owned_name(layout.SUBJECTS_DIR, e.name)}
        except FileNotFoundError:
            return
        for name in entries.keys() - sizes.keys():
            sizes[name] = _bytes(folder / name)
        for name in sizes.keys() - entries.keys():
            del sizes[name]
        total = sum(sizes.values())
        for _, name in sorted((t, n) for n, t in entries.items()):
            if total <= self.limit_bytes:
                break
            rel = f"{layout.SUBJECTS_DIR}/{name}"
            if rel != keep and layout.remove_owned(self.mirror, rel) is None:
                total -= sizes.pop(name)

    # --- Committing (preprocess) ------------------------------------------------------------------------------------

    def publish(self, manifest: Manifest) -> None:
        """After the mirror's manifest was written: upload the record files and slice index it names that the store
        lacks, the root files, then manifest.json, the one PUT that makes the new version visible."""
        for key in sorted(_referenced(manifest) - self.known):
            if key.startswith(f"{layout.RECORDS_DIR}/"):
                self.store.put(key, (self.mirror / key).read_bytes())
            elif key.startswith(f"{layout.INDEX_DIR}/"):
                self.upload_folder(key)
            elif not self.has_subject(key):  # computed here (workers=0) or reused from the mirror
                self.upload_folder(key)
        for name in (layout.LABEL_MAP_NAME, layout.SPLITS_NAME, layout.ZARR_JSON,
                     f"{layout.SUBJECTS_DIR}/{layout.ZARR_JSON}"):
            self.store.put(name, (self.mirror / name).read_bytes())
        self.store.put(layout.MANIFEST_NAME, (self.mirror / layout.MANIFEST_NAME).read_bytes())
        self.known = _referenced(manifest)

    def remove_orphans(self, manifest: Manifest, previous: Manifest | None) -> list[str]:
        """Delete from the store what neither `manifest` nor `previous` references and ctslice provably wrote:
        subject and index folders whose name and every object are ctslice's (a root zarr.json, if there, carrying
        its mark), record files whose bytes hash to their name. Returns what was kept, and why."""
        keep = _referenced(manifest) | _referenced(previous)
        kept: list[str] = []
        doomed: list[str] = []
        for folder, kind in ((layout.SUBJECTS_DIR, marks.SUBJECT), (layout.INDEX_DIR, marks.SLICE_INDEX)):
            for name in self.store.folders(f"{folder}/"):
                rel = f"{folder}/{name}"
                if rel in keep or not layout.is_owned_name(folder, name):
                    continue
                keys = [k for k, _ in self.store.list(f"{rel}/")]
                root = self.store.get(f"{rel}/zarr.json") if f"{rel}/zarr.json" in keys else None
                if root is not None and json.loads(root).get("attributes", {}).get("ctslice") != kind:
                    kept.append(f"{self.store.url}/{rel}: without ctslice's mark; kept")
                    continue
                doomed += [k for k in keys if k != f"{rel}/zarr.json"] + ([f"{rel}/zarr.json"] if root else [])
        for key, _ in self.store.list(f"{layout.RECORDS_DIR}/"):
            if key not in keep and layout.is_owned_name(layout.RECORDS_DIR, key.split("/", 1)[1]):
                body = self.store.get(key)
                if body is not None and key.endswith(f"-{hashlib.sha256(body).hexdigest()[:16]}.json"):
                    doomed.append(key)
        refused = self.store.delete_owned(doomed)
        return kept + [f"{self.store.url}/{k}: not a name ctslice writes; kept" for k in refused]


def _referenced(manifest: Manifest | None) -> set[str]:
    if manifest is None:
        return set()
    rows = manifest.subjects.table.values()
    return ({r.path for r in rows} | {getattr(r, "record", None) or "" for r in rows}
            | {manifest.slice_index or ""}) - {""}


def _bytes(path: Path) -> int:
    return sum(os.lstat(os.path.join(d, f)).st_size for d, _, fs in os.walk(path) for f in fs)


# --- What the preprocess stage calls (a no-op for a local cache) ---------------------------------------------------

def subject_exists(cache: Path, folder: str) -> bool:
    """A complete subject folder in the cache, or, for a mirror, in its store."""
    if store.subject_exists(cache, folder):
        return True
    remote = remote_of(cache)
    return remote is not None and remote.has_subject(folder)


def make_local(cache: Path, folders: Iterable[str]) -> None:
    """Fetch these subject folders into a mirror (a commit reads their small arrays); nothing for a local cache."""
    remote = remote_of(cache)
    for folder in folders if remote is not None else ():
        remote.fetch_subject(folder)


def publish(cache: Path, manifest: Manifest) -> None:
    remote = remote_of(cache)
    if remote is not None:
        remote.publish(manifest)


def remove_orphans(cache: Path, manifest: Manifest, previous: Manifest | None) -> list[str]:
    """After the swap: what could not be removed, and why (a failure here leaves orphans for the next run; the
    new version is already committed)."""
    remote = remote_of(cache)
    try:
        return remote.remove_orphans(manifest, previous) if remote is not None else []
    except CacheError as e:
        return [f"superseded objects not removed yet ({e}); the next preprocess tries again"]

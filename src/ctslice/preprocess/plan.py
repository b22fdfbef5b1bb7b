"""The plan of a preprocess run: the dataset compared with the cache, what to process, keep and remove, and what to
say before the work starts. An update (`plan_update`) and a repair (`plan_repair`) both produce a `Plan`; the
same execute and commit steps carry either out (run.py).

Planning writes nothing (except the one-time upgrade of a format-2 cache's bookkeeping, cache/upgrade.py): it
reads the manifest's table, stats the dataset's files and checks which subject folders exist; a subject's record
file is read only when its files' sizes or times changed.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from ..cache import mirror, store
from ..cache.label_map import label_map_to_json
from ..cache.manifest import FORMAT_VERSION, Manifest, OldFormat, manifest_path, read_manifest
from ..cache.records import Row
from ..cache.upgrade import upgrade_format2
from ..cache.settings import CacheSettings, settings_diff
from ..config import PreprocessConfig
from ..errors import CacheError, CacheFormatError
from .execute import input_size
from .fingerprint import Changes, compare, subject_key
from .sources import Dataset
from .split import assign_splits
from .workers import available_resources, cap_workers, worker_bytes


@dataclass
class Plan:
    cache: Path
    dataset: Dataset
    cfg: PreprocessConfig
    """The run's configuration, local workers capped to what the machine and the work allow."""
    manifest: Manifest
    """The manifest the run commits: settings, label map, dataset record; commit fills in subjects and the rest."""
    previous: Manifest | None
    """The cache's manifest before the run (None: a new cache, or one rebuilt from scratch)."""
    todo: set[str]
    """Subjects to compute."""
    keep: dict[str, Row]
    """Subjects kept as the cache has them (folder and record): the table row, or the record with refreshed file
    times of a subject whose files were only touched."""
    removed: list[str] = field(default_factory=list)
    """Cached subjects that left the dataset."""
    failed: dict[str, str] = field(default_factory=dict)
    """Subject -> reason, known before any work: the dataset's problems (a repair also keeps earlier failures)."""
    job_hash: str = ""
    """What subject folders are keyed with: the settings hash, salted when every subject must really be computed
    again (--force, repair), since a same-key folder would be reused."""
    rebuilt_all: str | None = None
    """Why everything is rebuilt (None: incremental). Only then may a subject whose new input fails keep its
    previous version."""
    changed_settings: dict[str, list] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    """What is said before the work starts."""
    splits: dict[str, list[str]] | None = None
    """The split as it stays (a repair); None: assigned at commit to the subjects the run leaves."""
    rebuild_index: bool = False
    """Build the slice index from every subject instead of updating the previous one (a repair: the previous
    index may be what verify found damaged)."""


def previous_manifest(cache: Path, force: bool, notes: list[str] | None = None
                      ) -> tuple[Manifest | None, str | None]:
    """The cache's manifest, or None with the reason to build everything. A format-2 cache is upgraded first
    (a line in `notes` says so)."""
    if not manifest_path(cache).exists():
        return None, "new cache"
    try:
        return read_manifest(cache), None
    except OldFormat:
        try:
            manifest, line = upgrade_format2(cache)
        except CacheError:
            if not force:
                raise
            return None, "unusable manifest"
        if notes is not None:
            notes.append(line)
        return manifest, None
    except CacheFormatError:  # rebuilt in the current format; the old folders are cleaned up afterwards
        return None, f"cache of another format (this ctslice writes format {FORMAT_VERSION})"
    except CacheError:
        if not force:  # a damaged manifest is not replaced without being asked: the message says how
            raise
        return None, "unusable manifest"


def plan_update(cache: Path, dataset: Dataset, cfg: PreprocessConfig, force: bool = False) -> Plan:
    """Bring the cache up to date with `dataset` and `cfg`: only added or modified subjects (and ones whose folder
    is gone) are computed, unless changed content settings, label map or format, or `force`, rebuild all."""
    labels = label_map_to_json(dataset.label_map)
    settings = CacheSettings.from_config(cfg, labels)
    upgraded: list[str] = []
    previous, problem = previous_manifest(cache, force, upgraded)
    changes = compare(dataset, previous, settings.hash)
    diff = settings_diff(previous.settings, previous.label_map, settings, labels) if previous else {}
    rebuilt_all = _rebuild_reason(problem, changes, diff, force)
    manifest = Manifest(settings=settings, label_map=labels,
                        dataset={"root": str(dataset.root), "layout": dataset.layout,
                                 "warnings": list(dataset.warnings), **_label_values(dataset)},
                        created=previous.created if previous else time.time())
    keep: dict[str, Row] = {}
    if rebuilt_all is None:
        todo = set(changes.added) | set(changes.modified)
        table = previous.subjects.table
        for sid in sorted(set(changes.unchanged) - todo):
            row = table[sid]
            if not mirror.subject_exists(cache, row.path):  # deleted by hand: make it again
                todo.add(sid)
                continue
            if sid in changes.touched:  # same bytes, new times: a new record file with them
                row = dataclasses.replace(previous.subjects[sid], files=changes.touched[sid])
            keep[sid] = row
    else:
        todo = {s.id for s in dataset.subjects}
    notes = upgraded
    if previous is not None:
        notes += _run_notes(previous, dataset, settings.split(), rebuilt_all, todo,
                           None if force else _built_before(cache, previous, changes, settings.hash, todo))
    # Subject folders are named by key, so same-key folders would be reused; --force salts the keys so that every
    # subject really is computed again (into new folders: the old ones stay until the manifest swap).
    return Plan(cache, dataset, _capped(cfg, dataset, todo, notes), manifest, previous, todo, keep,
                removed=sorted(changes.removed), failed={p.subject: str(p) for p in dataset.problems},
                job_hash=_salted(settings.hash) if force else settings.hash, rebuilt_all=rebuilt_all,
                changed_settings=diff, notes=notes)


def plan_repair(cache: Path, dataset: Dataset, cfg: PreprocessConfig, redo: Collection[str]) -> Plan:
    """Compute only `redo` again, into new folders; every other subject (folder and record), the split, the
    failed list, the settings and the dataset record stay exactly as the cache has them. The caller has checked
    that the dataset holds every cached subject with the cache's label map (repair.py); a repair never rebuilds:
    checked again here, under the cache's lock."""
    labels = label_map_to_json(dataset.label_map)
    settings = CacheSettings.from_config(cfg, labels)
    previous, problem = previous_manifest(cache, force=False)
    changes = compare(dataset, previous, settings.hash)
    diff = settings_diff(previous.settings, previous.label_map, settings, labels) if previous else {}
    reason = _rebuild_reason(problem, changes, diff, force=False)
    if previous is None or reason:
        raise CacheError(f"{cache}: cannot repair ({reason or 'no manifest'}); nothing was changed")
    todo = set(redo) & set(previous.subjects)
    keep = {sid: r for sid, r in previous.subjects.table.items() if sid not in todo}
    # What failed before stays listed: a repair does not retry it.
    failed = {**{sid: why for sid, why in previous.failed.items() if sid not in todo},
              **{p.subject: str(p) for p in dataset.problems if p.subject in todo}}
    manifest = Manifest(settings=previous.settings, label_map=previous.label_map, dataset=previous.dataset,
                        created=previous.created)
    notes: list[str] = []
    # Salted as --force is: the damaged folder has the key the subject would get again.
    return Plan(cache, dataset, _capped(cfg, dataset, todo, notes), manifest, previous, todo, keep, failed=failed,
                job_hash=_salted(settings.hash), notes=notes, splits=previous.splits, rebuild_index=True)


def _salted(settings_hash: str) -> str:
    return f"{settings_hash}+force-{uuid.uuid4().hex[:8]}"


def describe_changes(diff: dict[str, list]) -> str:
    """'size 128 -> 256, label map 14 -> 15 structures (+liver)': each changed setting, old -> new."""
    parts = []
    for name, (old, new, *detail) in diff.items():
        if name == "label_map":
            names = [f"+{n}" for n in detail[0]["added"]] + [f"-{n}" for n in detail[0]["removed"]]
            shown = " ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
            parts.append(f"label map {old} -> {new} structures ({shown})")
        else:
            fmt = lambda v: "native" if name == "spacing" and v is None else v  # noqa: E731
            parts.append(f"{name} {fmt(old)} -> {fmt(new)}")
    return ", ".join(parts)


def _rebuild_reason(previous_problem: str | None, changes: Changes, diff: dict[str, list], force: bool
                    ) -> str | None:
    if force:
        return "--force" + (f", {previous_problem}" if previous_problem else "")
    if previous_problem:
        return previous_problem
    if changes.settings_changed:
        return f"settings changed: {describe_changes(diff)}" if diff else "settings changed"
    return None


def _built_before(cache: Path, previous: Manifest, changes: Changes, shash: str, todo: set[str]) -> int:
    """How many of `todo` already have a complete folder for `shash` (an earlier build with the same settings and
    files, kept as the previous version): the run reuses them instead of computing them again."""
    count = 0
    for sid in set(todo) & set(changes.unchanged):
        files = changes.touched.get(sid, previous.subjects[sid].files)
        count += mirror.subject_exists(cache, store.subject_folder(sid, subject_key(shash, files)))
    return count


def _run_notes(previous: Manifest, dataset: Dataset, split: dict, rebuilt_all: str | None, todo: set[str],
               built: int | None) -> list[str]:
    """What an update of an existing cache says before it starts: a full rebuild and why (and how much of it is
    already on disk), changed split settings when they matter, another dataset folder than last time."""
    notes = []
    if rebuilt_all:
        reuse = (f" ({built} of them still on disk from an earlier build with these settings: reused, not "
                 "computed)") if built else ""
        notes.append(f"full rebuild of {len(todo)} subject(s): {rebuilt_all}{reuse}")
    old_split = previous.settings.split()
    if old_split != split and any(s.id not in dataset.official_split for s in dataset.subjects):
        what = ", ".join(f"{k} {old_split.get(k)} -> {v}" for k, v in split.items() if old_split.get(k) != v)
        notes.append(f"split settings changed: {what}: subjects without an official split are assigned again")
    old_root = previous.dataset.get("root")
    if old_root and old_root != str(dataset.root):
        notes.append(f"dataset folder changed: {old_root} -> {dataset.root} (subjects are compared by id and file "
                     "content)")
    return notes


def cache_splits(subjects: Collection[str], settings: CacheSettings, dataset: Dataset, previous: Manifest | None
                 ) -> dict[str, str]:
    """The split the cache gets (split.assign_splits): a subject keeps its cached split while the split settings
    stay the same and the dataset gives it no official one."""
    same = previous is not None and previous.settings.split() == settings.split()
    return assign_splits(subjects, settings.seed, settings.val_fraction, dataset.official_split,
                         previous.split_of() if same else {})


def _label_values(dataset: Dataset) -> dict:
    """{"label_values": {index: the dataset's own value}} for layouts whose label values are renumbered (nnU-Net,
    MSD), so that predictions can be written with the dataset's values; nothing otherwise."""
    if dataset.label_values is None:
        return {}
    return {"label_values": {str(index): int(value) for value, index in sorted(dataset.label_values.items())}}


def _capped(cfg: PreprocessConfig, dataset: Dataset, todo: set[str], notes: list[str]) -> PreprocessConfig:
    """cfg with local workers capped (workers.cap_workers), the per-worker memory estimated from the largest CT."""
    if len(todo) < 2 or cfg.workers < 2 or cfg.dask_scheduler:
        return cfg
    largest = max((s.image for s in dataset.subjects if s.id in todo), key=lambda f: input_size(dataset.root / f))
    cores, memory = available_resources()
    workers, note = cap_workers(cfg.workers, cores, len(todo), memory, worker_bytes(dataset.root / largest))
    if note:
        notes.append(note)
    return dataclasses.replace(cfg, workers=workers)

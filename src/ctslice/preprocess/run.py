"""`run_preprocess`: bring a cache up to date with a dataset folder.

Incremental by default: only added or modified subjects are processed, removed ones leave the cache, unchanged
ones are not touched. Changed content settings (or label map, or format version) and `force` rebuild everything.

Crash safety comes from the order of the steps: subjects are written to new folders (never over old ones) and
synced to disk, the manifest is swapped atomically at the end, and only then are folders that neither it nor the
previous manifest references deleted (the previous version's stay one more run, for readers that still use it).
A run killed at any point leaves the previous manifest and complete subject folders; the next run reuses the
folders that were finished (same key) and removes the rest.

The cache folder must be new, empty or a ctslice cache (cache/owner.py), and apart from the dataset folder.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..cache import lease, owner, store
from ..cache.cleanup import remove_leftovers
from ..cache.lock import cache_lock
from ..cache.manifest import (
    FORMAT_VERSION, Manifest, SubjectRecord, manifest_path, read_manifest, recover_settings, settings_diff,
    settings_hash, write_manifest,
)
from ..cache.warnings import warning_summary
from ..config import PreprocessConfig
from ..errors import CacheError, CacheFormatError, CacheWriteError
from .fingerprint import Changes, compare, subject_key
from ..cache.label_map import label_map_to_json
from .parallel import map_unordered
from .sources import Dataset, discover
from .split import assign_splits, split_moves, splits_to_lists
from ..cache.statistics import dataset_statistics, summed_histogram
from ..text import first_few
from .subject import SubjectJob, SubjectOutcome, process_subject
from .workers import available_resources, cap_workers, worker_bytes

ProgressFn = Callable[[int, int, SubjectOutcome], None]


@dataclass
class PreprocessReport:
    cache: Path
    processed: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    rebuilt_all: str | None = None
    """Why everything was rebuilt (None for an incremental run)."""
    changed_settings: dict[str, list] = field(default_factory=dict)
    """Content settings (and label map) that differ from the cache's: name -> [old, new]."""
    notes: list[str] = field(default_factory=list)
    """Things said once, e.g. that --workers was capped."""
    warnings: dict = field(default_factory=dict)
    """cache.warnings.warning_summary of the cache this run left."""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed


def _previous_manifest(cache: Path, force: bool) -> tuple[Manifest | None, str | None]:
    """The cache's manifest, or None with the reason to build everything."""
    if not manifest_path(cache).exists():
        return None, "new cache"
    try:
        return read_manifest(cache), None
    except CacheFormatError:  # rebuilt in the current format; the old folders are cleaned up afterwards
        return None, f"cache of another format (this ctslice writes format {FORMAT_VERSION})"
    except CacheError:
        if not force:  # a damaged manifest is not replaced without being asked: the message says how
            raise
        return None, "unusable manifest"


def describe_changes(diff: dict[str, list]) -> str:
    """'size 128 -> 256, label map 14 -> 15 structures (+liver)': each changed setting, old -> new."""
    parts = []
    for name, (old, new, *detail) in diff.items():
        if name == "label_map":
            names = [f"+{n}" for n in detail[0]["added"]] + [f"-{n}" for n in detail[0]["removed"]]
            shown = first_few(names, 6, separator=" ")
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


def cache_settings(cache: Path) -> dict:
    """The settings an existing cache was built with (Manifest.stored_settings), the defaults of its update;
    {} for a new cache or one of another format (rebuilt anyway). See `update_settings` for a damaged manifest."""
    return update_settings(cache)[0]


def update_settings(cache: Path) -> tuple[dict, str | None]:
    """(settings, origin): the defaults of a cache's update, as `cache_settings`. When the manifest is unusable
    (what `--force` rebuilds), the settings are recovered where they still can be (manifest.recover_settings)
    and `origin` says from where, or that none could be: then the run falls back to the defaults. origin is None
    for a readable manifest, a new cache or another format."""
    if not manifest_path(cache).exists():
        return {}, None
    try:
        return read_manifest(cache).stored_settings(), None
    except CacheFormatError:
        return {}, None
    except CacheError:
        settings, origin = recover_settings(cache)
        return settings, (origin if settings else None) or "none readable"


def rebuild_settings_note(origin: str, cfg: PreprocessConfig) -> str:
    """What `preprocess --force` over an unusable manifest says before it starts: the settings it will use and
    why (recovered, and from where, or the defaults), and how to give others."""
    values = (f"spacing {'native' if cfg.spacing is None else f'{cfg.spacing} mm'}, size {cfg.size}, "
              f"HU [{cfg.hu_min}, {cfg.hu_max}], val_fraction {cfg.val_fraction}, seed {cfg.seed}")
    how = "--spacing, --size, --hu-min, --hu-max, --val-fraction, --seed or --config"
    if origin == "none readable":
        return (f"the manifest is unusable and no copy of the cache's settings is readable: the rebuild uses the "
                f"defaults and the flags given ({values}); to rebuild with the cache's own settings, pass them "
                f"({how})")
    return (f"the manifest is unusable: the rebuild uses the cache's settings recovered from {origin} and the "
            f"flags given ({values}); {how} change them")


def run_preprocess(data: Path, cache: Path, cfg: PreprocessConfig, force: bool = False,
                   progress: ProgressFn | None = None, say: Callable[[str], None] | None = None,
                   redo: Collection[str] | None = None) -> PreprocessReport:
    """Preprocess `data` into `cache`. Raises CtsliceError for problems with the whole dataset or cache; problems
    with single subjects end up in report.failed (and the manifest's `failed`) while the others go on.
    `say` gets, once and before the work starts, what the run is about to do when that needs saying: a full
    rebuild and why, a capped number of workers (also kept in report.notes).
    `redo` (repair of damaged subjects): compute only these subjects again, into new folders; every other subject
    (folder and record), the split, the failed list and the dataset record stay exactly as the cache has them.
    The caller checks that the dataset holds every cached subject with the cache's label map (repair.py)."""
    start = time.perf_counter()
    cfg.validate()
    data, cache = Path(data).resolve(), Path(cache).resolve()
    owner.check_apart(data, cache)
    owner.check_writable(cache)
    dataset = discover(data)
    labels = label_map_to_json(dataset.label_map)
    content = cfg.content_settings()
    shash = settings_hash(content, labels)
    try:
        owner.mark(cache)
    except OSError as e:
        raise CacheWriteError(cache, e) from None
    with cache_lock(cache), _write_errors(cache):
        previous, previous_problem = _previous_manifest(cache, force)
        changes = compare(dataset, previous, shash)
        diff = settings_diff(previous, content, labels) if previous else {}
        report = PreprocessReport(cache, rebuilt_all=_rebuild_reason(previous_problem, changes, diff, force),
                                  changed_settings=diff)
        repair = redo is not None
        if repair and (previous is None or report.rebuilt_all):  # repair never rebuilds: checked before, again here
            raise CacheError(f"{cache}: cannot repair ({report.rebuilt_all or 'no manifest'}); nothing was changed")
        settings = {**content, "hash": shash, "split": cfg.split_settings()}
        manifest = Manifest(settings=settings, label_map=labels,
                            dataset={"root": str(data), "layout": dataset.layout, "warnings": list(dataset.warnings),
                                     **_label_values(dataset)},
                            created=previous.created if previous else time.time())
        if previous is None:  # so that even a first run killed mid-way leaves a valid (empty) cache
            write_manifest(cache, manifest)
        keep: dict[str, SubjectRecord] = {}
        if repair:
            todo = set(redo) & set(previous.subjects)
            keep = {sid: r for sid, r in previous.subjects.items() if sid not in todo}
            report.unchanged = sorted(keep)
        elif report.rebuilt_all is None:
            todo = set(changes.added) | set(changes.modified)
            for sid in sorted(set(changes.unchanged) - todo):
                record = previous.subjects[sid]
                if not store.subject_exists(cache, record.path):  # deleted by hand: make it again
                    todo.add(sid)
                    continue
                if sid in changes.touched:
                    record.files = changes.touched[sid]
                keep[sid] = record
            report.unchanged = sorted(keep)
        else:
            todo = {s.id for s in dataset.subjects}
        report.removed = [] if repair else sorted(changes.removed)
        if previous is not None and not repair:
            report.notes += _run_notes(previous, dataset, settings["split"], report.rebuilt_all, todo,
                                       None if force else _built_before(cache, previous, changes, shash, todo))

        # Subject folders are named by key, so same-key folders would be reused; --force salts the keys so that
        # every subject really is computed again (into new folders: the old ones stay until the manifest swap).
        # Repair (redo) does the same, since the damaged folder has the key the subject would get again.
        job_hash = f"{shash}+force-{uuid.uuid4().hex[:8]}" if force or redo else shash
        cfg = _capped(cfg, dataset, todo, report.notes)
        for note in report.notes:
            if say:
                say(note)
        outcomes = _process_all(dataset, cache, cfg, job_hash, todo, progress)
        failed = {p.subject: str(p) for p in dataset.problems if not repair or p.subject in todo}
        if repair:  # what failed before stays listed: a repair does not retry it
            failed = {**{sid: why for sid, why in previous.failed.items() if sid not in todo}, **failed}
        for outcome in outcomes:
            if outcome.record is not None:
                keep[outcome.subject] = outcome.record
                (report.reused if outcome.reused else report.processed).append(outcome.subject)
            else:
                failed[outcome.subject] = outcome.error or "failed"
        # A subject whose new input fails keeps its previous (complete, valid) version when settings allow.
        if report.rebuilt_all is None:
            for sid in failed:
                if previous and sid in previous.subjects and sid not in keep \
                        and store.subject_exists(cache, previous.subjects[sid].path):
                    keep[sid] = previous.subjects[sid]
        report.failed = dict(sorted(failed.items()))
        report.processed.sort()
        report.reused.sort()

        manifest.subjects = keep
        manifest.failed = report.failed
        if repair:  # everything but the repaired subjects' records as it was
            manifest.settings, manifest.dataset, manifest.splits = previous.settings, previous.dataset, previous.splits
        else:
            manifest.splits = splits_to_lists(cache_splits(keep, cfg, dataset, previous))
            _split_notes(previous.split_of() if previous else {}, manifest.splits, cfg.val_fraction, report.notes,
                         say)
        index = store.build_slice_index(cache, {sid: r.path for sid, r in keep.items()})
        manifest.slice_index = _same_index(cache, previous, index) or store.write_slice_index(cache, index)
        manifest.totals = {"subjects": len(keep), "slices": len(index), "failed": len(failed),
                           **{f"{name}_subjects": len(ids) for name, ids in manifest.splits.items()}}
        histogram = summed_histogram(cache, keep.values(), damaged := [])
        report.notes += damaged
        for note in damaged if say else ():
            say(note)
        manifest.statistics = dataset_statistics(keep.values(), dataset.label_map, histogram)
        lease.record_version(cache, manifest)  # the file its readers will lock (cache/lease.py)
        store.sync_filesystem(cache)  # subjects and index on disk before the manifest names them
        write_manifest(cache, manifest)
        report.warnings = warning_summary(manifest)
        with lease.reclaim_versions(cache, keep=(manifest, previous)) as held:  # versions readers still use stay
            remove_leftovers(cache, manifest, keep=previous, held=held)
    report.seconds = time.perf_counter() - start
    return report


def _built_before(cache: Path, previous: Manifest, changes: Changes, shash: str, todo: set[str]) -> int:
    """How many of `todo` already have a complete folder for `shash` (an earlier build with the same settings and
    files, kept as the previous version): the run reuses them instead of computing them again."""
    count = 0
    for sid in set(todo) & set(changes.unchanged):
        files = changes.touched.get(sid, previous.subjects[sid].files)
        count += store.subject_exists(cache, store.subject_folder(sid, subject_key(shash, files)))
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
    old_split = previous.settings.get("split", {})
    if old_split != split and any(s.id not in dataset.official_split for s in dataset.subjects):
        what = ", ".join(f"{k} {old_split.get(k)} -> {v}" for k, v in split.items() if old_split.get(k) != v)
        notes.append(f"split settings changed: {what}: subjects without an official split are assigned again")
    old_root = previous.dataset.get("root")
    if old_root and old_root != str(dataset.root):
        notes.append(f"dataset folder changed: {old_root} -> {dataset.root} (subjects are compared by id and file "
                     "content)")
    return notes


def cache_splits(subjects: Collection[str], cfg: PreprocessConfig, dataset: Dataset, previous: Manifest | None
            ) -> dict[str, str]:
    """The split the cache gets (split.assign_splits): a subject keeps its cached split while the split settings
    stay the same and the dataset gives it no official one."""
    same = previous is not None and previous.settings.get("split") == cfg.split_settings()
    return assign_splits(subjects, cfg.seed, cfg.val_fraction, dataset.official_split,
                         previous.split_of() if same else {})


def _split_notes(old: dict[str, str], splits: dict[str, list[str]], val_fraction: float, notes: list[str],
                 say: Callable[[str], None] | None) -> None:
    """Notes on subjects that moved to another split (a changed meta.csv, seed or fraction) and on a split that
    ended up empty although subjects should be in it."""
    new = {sid: name for name, ids in splits.items() for sid in ids}
    added = []
    moves = split_moves(old, new)
    if moves:
        added.append(f"split changed for {len(moves)} subject(s): {first_few(moves, 10)}")
    if new and not splits["train"]:
        added.append(f"warning: the train split is empty ({len(new)} subject(s) in val/test)")
    if len(new) > 1 and val_fraction > 0 and not splits["val"]:
        added.append("warning: the val split is empty")
    notes += added
    for note in added if say else ():
        say(note)


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
    largest = max((s.image for s in dataset.subjects if s.id in todo), key=lambda f: _size(dataset.root / f))
    cores, memory = available_resources()
    workers, note = cap_workers(cfg.workers, cores, len(todo), memory, worker_bytes(dataset.root / largest))
    if note:
        notes.append(note)
    return dataclasses.replace(cfg, workers=workers)


def _same_index(cache: Path, previous: Manifest | None, index: store.SliceIndex) -> str | None:
    """The previous slice index folder if it holds exactly `index` (and reads without error): an unchanged cache
    keeps its index instead of leaving a superseded copy behind at every run."""
    if previous is None or previous.slice_index is None:
        return None
    try:
        old = store.read_slice_index(cache, previous.slice_index)
    except Exception:  # noqa: BLE001  (any damage: write a new one; verify names the damage)
        return None
    same = old.subjects == index.subjects and all(
        np.array_equal(getattr(old, name), getattr(index, name)) for name in store.INDEX_ARRAYS)
    return previous.slice_index if same else None


@contextmanager
def _write_errors(cache: Path) -> Iterator[None]:
    """A full disk or a read-only cache while writing the index or manifest: one clear error. The manifest is
    replaced last and atomically, so the previous version is intact whenever this is raised."""
    try:
        yield
    except OSError as e:
        raise CacheWriteError(cache, e) from None


def _process_all(dataset: Dataset, cache: Path, cfg: PreprocessConfig, shash: str, todo: set[str],
                 progress: ProgressFn | None) -> list[SubjectOutcome]:
    jobs = [SubjectJob(s, str(dataset.root), str(cache), cfg.content_settings(), shash, dataset.label_map,
                       dataset.label_values) for s in dataset.subjects if s.id in todo]
    # Largest inputs first, so one big subject does not start last and hold up the end of the run.
    jobs.sort(key=lambda j: -_size(dataset.root / j.source.image))

    def lost(job: SubjectJob, error: BaseException) -> SubjectOutcome:
        return SubjectOutcome(job.source.id, error=f"{job.source.id}: worker lost ({type(error).__name__}: {error})")

    outcomes = []
    for outcome in map_unordered(process_subject, jobs, cfg.workers, cfg.dask_scheduler, lost):
        outcomes.append(outcome)
        if progress:
            progress(len(outcomes), len(jobs), outcome)
    return outcomes


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0

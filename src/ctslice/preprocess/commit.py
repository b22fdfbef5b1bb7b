"""Commit a run: make what execute computed the cache's current version, in the order that keeps it crash safe.

Subjects, their record files and the slice index are synced to disk before the manifest names them (a new
slice index only when a subject changed: cache/slice_index.py updates the previous one), the manifest is swapped
atomically, and only then are folders that neither it nor the previous manifest references deleted (the previous
version's stay one more run, and longer while a reader holds its lease: cache/lease.py). A run killed before the
swap leaves the previous manifest; one killed after it leaves the new one and some leftovers. A run that changed
nothing (the manifest it would write says what the current one says) writes none of it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..cache import lease, mirror, store
from ..cache.cleanup import remove_leftovers
from ..cache.manifest import same_content, write_manifest, write_root_files
from ..cache.records import Records
from ..cache.slice_index import updated_index
from ..cache.statistics import dataset_statistics
from ..cache.warnings import warning_summary
from .plan import Plan, cache_splits
from .split import split_moves, splits_to_lists
from .subject import SubjectOutcome


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
    written: bool = True
    """False when nothing changed: the cache was left as it was (its manifest not even written again)."""

    @property
    def ok(self) -> bool:
        return not self.failed


def commit(plan: Plan, outcomes: list[SubjectOutcome], say: Callable[[str], None] | None = None
           ) -> PreprocessReport:
    """Write the new version of the cache from the plan and the subjects' outcomes; the report of the run.
    `say` gets the notes that only the outcomes tell (split moves, damaged histograms)."""
    cache, previous, dataset = plan.cache, plan.previous, plan.dataset
    report = PreprocessReport(cache, unchanged=sorted(plan.keep), removed=plan.removed, rebuilt_all=plan.rebuilt_all,
                              changed_settings=plan.changed_settings, notes=list(plan.notes))
    keep, failed = dict(plan.keep), dict(plan.failed)
    for outcome in outcomes:
        if outcome.record is not None:
            keep[outcome.subject] = outcome.record
            (report.reused if outcome.reused else report.processed).append(outcome.subject)
        else:
            failed[outcome.subject] = outcome.error or "failed"
    # A subject whose new input fails keeps its previous (complete, valid) version when settings allow.
    if plan.rebuilt_all is None:
        before = previous.subjects.table if previous else {}
        for sid in failed:
            if sid in before and sid not in keep and mirror.subject_exists(cache, before[sid].path):
                keep[sid] = before[sid]
    report.failed = dict(sorted(failed.items()))
    report.processed.sort()
    report.reused.sort()

    manifest = plan.manifest
    mirror.make_local(cache, _read_by_commit(previous, keep, plan.rebuild_index))
    manifest.subjects = Records(cache, keep)  # rows of kept subjects, records of new and refreshed ones
    manifest.failed = report.failed
    if plan.splits is not None:
        manifest.splits = plan.splits
    else:
        manifest.splits = splits_to_lists(cache_splits(keep, manifest.settings, dataset, previous))
        _tell(_split_notes(previous.split_of() if previous else {}, manifest.splits, manifest.settings.val_fraction),
              report.notes, say)
    index, same = updated_index(cache, None if plan.rebuild_index else previous, manifest.subjects,
                                manifest.num_labels, damaged := [])
    manifest.slice_index = previous.slice_index if same else store.write_slice_index(cache, index)
    manifest.totals = {"subjects": len(keep), "slices": len(index), "failed": len(failed),
                       **{f"{name}_subjects": len(ids) for name, ids in manifest.splits.items()}}
    _tell(damaged, report.notes, say)
    manifest.statistics = dataset_statistics(index, (r.slices for r in keep.values()), dataset.label_map)
    if same_content(manifest, previous):  # nothing changed: the version stays as it is, manifest included
        report.written = False
        write_root_files(cache, previous, unless_same=True)  # put back any the user deleted or edited
        manifest = previous
    else:
        manifest.subjects.save(cache)  # record files of new and changed subjects
        lease.record_version(cache, manifest)  # the file its readers will lock (cache/lease.py)
        write_manifest(cache, manifest)  # syncs subjects, records and index to disk before the manifest names them
        mirror.publish(cache, manifest)  # a cache on object storage: its manifest.json last (cache/mirror.py)
    report.warnings = warning_summary(manifest)
    with lease.reclaim_versions(cache, keep=(manifest, previous)) as held:  # versions readers still use stay
        remove_leftovers(cache, manifest, keep=previous, held=held)
    _tell(mirror.remove_orphans(cache, manifest, previous), report.notes, say)
    return report


def _read_by_commit(previous, keep: dict, rebuild_index: bool) -> list[str]:
    """Subject folders whose small arrays the slice index update reads (cache/slice_index.py): those new to this
    version, and, unless every subject is new, those leaving it (their histograms are subtracted). For a mirror of
    an object store they are fetched first; a subject computed here is in the mirror already."""
    before = {} if previous is None or rebuild_index else previous.subjects.table
    arrived = [row.path for sid, row in keep.items() if sid not in before or before[sid].path != row.path]
    leaving = [row.path for sid, row in before.items() if sid not in keep or keep[sid].path != row.path]
    return arrived + (leaving if len(arrived) < len(keep) else [])


def _tell(added: list[str], notes: list[str], say: Callable[[str], None] | None) -> None:
    notes += added
    for note in added if say else ():
        say(note)


def _split_notes(old: dict[str, str], splits: dict[str, list[str]], val_fraction: float) -> list[str]:
    """Notes on subjects that moved to another split (a changed meta.csv, seed or fraction) and on a split that
    ended up empty although subjects should be in it."""
    new = {sid: name for name, ids in splits.items() for sid in ids}
    added = []
    moves = split_moves(old, new)
    if moves:
        added.append(f"split changed for {len(moves)} subject(s): {_first(moves)}")
    if new and not splits["train"]:
        added.append(f"warning: the train split is empty ({len(new)} subject(s) in val/test)")
    if len(new) > 1 and val_fraction > 0 and not splits["val"]:
        added.append("warning: the val split is empty")
    return added


def _first(items: list[str], limit: int = 10) -> str:
    return ", ".join(items[:limit]) + (f" and {len(items) - limit} more" if len(items) > limit else "")

"""`run_preprocess`: bring a cache up to date with a dataset folder.

Incremental by default: only added or modified subjects are processed, removed ones leave the cache, unchanged
ones are not touched. Changed content settings (or label map, or format version) and `force` rebuild everything.
An existing cache's own settings are the defaults of its update (settings.py): only what the caller gives changes.

A run is plan -> execute -> commit, under the cache's lock: the plan (plan.py) compares dataset and cache and
decides what to process, keep and remove; execute (execute.py) computes subjects into new folders; commit
(commit.py) writes the slice index, statistics and manifest and removes what is no longer referenced. A repair
(repair.py) is the same run with another plan.

Crash safety comes from the order of the steps: subjects are written to new folders (never over old ones) and
synced to disk, the manifest is swapped atomically at the end, and only then are folders that neither it nor the
previous manifest references deleted (the previous version's stay one more run, for readers that still use it).
A run killed at any point leaves the previous manifest and complete subject folders; the next run reuses the
folders that were finished (same key) and removes the rest.

The cache folder must be new, empty or a ctslice cache (cache/owner.py), and apart from the dataset folder.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..cache import owner
from ..cache.lock import cache_lock
from ..cache.manifest import write_manifest
from ..config import PreprocessConfig
from ..errors import CacheWriteError
from .commit import PreprocessReport, commit
from .execute import ProgressFn, execute
from .plan import Plan, plan_update
from .settings import Given, rebuild_settings_note, resolve_config
from .sources import Dataset, discover

__all__ = ["PreprocessReport", "ProgressFn", "carry_out", "run_preprocess"]

Planner = Callable[[Path, Dataset], Plan]
"""(resolved cache folder, discovered dataset) -> the plan; called under the cache's lock."""


def run_preprocess(data: Path, cache: Path, settings: Given = None, *, config_file: Path | None = None,
                   force: bool = False, progress: ProgressFn | None = None,
                   say: Callable[[str], None] | None = None) -> PreprocessReport:
    """Preprocess `data` into `cache`. `settings`: the [preprocess] values the caller gives ({"size": 256}; None
    values are not given), over `config_file`'s [preprocess] section, over the cache's own settings, over the
    defaults; a whole PreprocessConfig is taken as it is. Raises CtsliceError for problems with the whole dataset
    or cache; problems with single subjects end up in report.failed (and the manifest's `failed`) while the others
    go on. `say` gets, once and before the work starts, what the run is about to do when that needs saying: a full
    rebuild and why, the settings a --force over an unusable manifest uses, a capped number of workers (also kept
    in report.notes)."""
    cfg, stored = resolve_config(Path(cache), settings, config_file)
    first = [rebuild_settings_note(stored.recovered_from, cfg)] if force and stored.recovered_from else []
    for note in first if say else ():
        say(note)
    report = carry_out(data, cache, cfg, lambda folder, dataset: plan_update(folder, dataset, cfg, force),
                       progress, say)
    report.notes[:0] = first
    return report


def carry_out(data: Path, cache: Path, cfg: PreprocessConfig, planner: Planner, progress: ProgressFn | None = None,
              say: Callable[[str], None] | None = None) -> PreprocessReport:
    """Plan (with `planner`), execute and commit a run of `data` into `cache`, under the cache's lock."""
    start = time.perf_counter()
    cfg.validate()
    data, cache = Path(data).resolve(), Path(cache).resolve()
    owner.check_apart(data, cache)
    owner.check_writable(cache)
    dataset = discover(data)
    try:
        owner.mark(cache)
    except OSError as e:
        raise CacheWriteError(cache, e) from None
    with cache_lock(cache), _write_errors(cache):
        plan = planner(cache, dataset)
        for note in plan.notes if say else ():
            say(note)
        if plan.previous is None:  # so that even a first run killed mid-way leaves a valid (empty) cache
            write_manifest(cache, plan.manifest)
        report = commit(plan, execute(plan, progress), say)
    report.seconds = time.perf_counter() - start
    return report


@contextmanager
def _write_errors(cache: Path) -> Iterator[None]:
    """A full disk or a read-only cache while writing the index or manifest: one clear error. The manifest is
    replaced last and atomically, so the previous version is intact whenever this is raised."""
    try:
        yield
    except OSError as e:
        raise CacheWriteError(cache, e) from None

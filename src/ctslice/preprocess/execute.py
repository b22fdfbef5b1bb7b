"""Execute a plan: compute its subjects, each into its own new folder, fanned out by parallel.map_unordered.

Nothing here touches the manifest: a run killed during this step leaves the previous manifest and complete subject
folders, which the next run reuses by key (commit.py makes them part of the cache).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ..cache.mirror import remote_of
from .parallel import map_unordered, runs_in_process
from .subject import SubjectJob, SubjectOutcome, process_subject
from .threads import subject_threads

if TYPE_CHECKING:
    from .plan import Plan

ProgressFn = Callable[[int, int, SubjectOutcome], None]


def execute(plan: Plan, progress: ProgressFn | None = None) -> list[SubjectOutcome]:
    """The outcome of each subject in plan.todo; `progress(done, total, outcome)` after each."""
    dataset, cfg = plan.dataset, plan.cfg
    todo = [s for s in dataset.subjects if s.id in plan.todo]
    threads = subject_threads(cfg.workers, cfg.dask_scheduler,
                              runs_in_process(cfg.workers, cfg.dask_scheduler, len(todo)))
    remote = remote_of(plan.cache)  # a cache on object storage: each worker uploads its subject
    jobs = [SubjectJob(s, str(dataset.root), str(plan.cache), cfg.content_settings(), plan.job_hash,
                       dataset.label_map, dataset.label_values, threads, remote) for s in todo]
    # Largest inputs first, so one big subject does not start last and hold up the end of the run.
    jobs.sort(key=lambda j: -input_size(dataset.root / j.source.image))

    def lost(job: SubjectJob, error: BaseException) -> SubjectOutcome:
        return SubjectOutcome(job.source.id, error=f"{job.source.id}: worker lost ({type(error).__name__}: {error})")

    outcomes = []
    for outcome in map_unordered(process_subject, jobs, cfg.workers, cfg.dask_scheduler, lost):
        outcomes.append(outcome)
        if progress:
            progress(len(outcomes), len(jobs), outcome)
    return outcomes


def input_size(path: Path) -> int:
    """A source file's size in bytes (0 when it cannot be read: discovery or the subject names the problem)."""
    try:
        return path.stat().st_size
    except OSError:
        return 0

"""Reading a subject's files on several threads, in order: decompression and numpy release the GIL, so one
subject uses the cores its process is given (all of them in-process; its share of them in a local dask worker)."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


# Each thread holds one decoded mask (1 byte a voxel) while it waits for its turn to be merged; beyond 8 threads
# the masks' decompression stops being what a subject waits on.
MAX_SUBJECT_THREADS = 8


def subject_threads(workers: int, scheduler: str | None, in_process: bool) -> int:
    """Threads for one subject: the cores this process may run on, shared out among the subjects that run at once
    (at most MAX_SUBJECT_THREADS). In-process, subjects run one after the other: all the cores. On the local dask
    cluster, `workers` single-threaded workers each run one subject: cores // workers, so that one worker on a
    2-core machine uses both cores and two workers one each (measured before: one thread per subject left a lone
    worker with a core idle while it read and resampled). On an existing cluster (`scheduler`) the workers' cores
    are not known here: 1, as each of a worker's threads runs a subject of its own."""
    cores = min(len(os.sched_getaffinity(0)), MAX_SUBJECT_THREADS)
    if in_process:
        return cores
    if scheduler:
        return 1
    return max(1, cores // max(1, workers))


def map_in_order(fn: Callable[[T], R], items: Iterable[T], threads: int) -> Iterator[R]:
    """fn(item) for each item, yielded in the items' order, on up to `threads` threads with at most `threads`
    results waiting besides the one yielded (memory stays bounded: a few masks, never all of them).
    The first failure in item order is raised, as a plain loop would raise it; the rest is cancelled."""
    if threads <= 1:
        yield from map(fn, items)
        return
    pool = ThreadPoolExecutor(threads, thread_name_prefix="ctslice-read")
    pending: deque[Future[R]] = deque()
    try:
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) > threads:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@contextmanager
def alongside(fn: Callable[[], R], background: bool) -> Iterator[Callable[[], R]]:
    """Yields a getter of fn()'s result (which raises fn's error). With `background`, fn runs on a thread of its
    own while the caller goes on (the thread is joined on exit); otherwise it runs at once, as a plain call would,
    and its error is raised on entering."""
    if not background:
        value = fn()  # its error is raised here, at the `with`
        yield lambda: value
        return
    with ThreadPoolExecutor(1, thread_name_prefix="ctslice-alongside") as pool:
        future = pool.submit(fn)
        yield future.result

"""Reading a subject's files on several threads, in order: decompression and numpy release the GIL, so one
subject uses the cores its process is given (all of them in-process; one per dask worker thread)."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


# Each thread holds one decoded mask (1 byte a voxel) while it waits for its turn to be merged; beyond 8 threads
# the masks' decompression stops being what a subject waits on.
MAX_SUBJECT_THREADS = 8


def subject_threads(in_process: bool) -> int:
    """Threads for one subject: the cores this process may run on (at most MAX_SUBJECT_THREADS) when subjects run
    in this process one after the other; 1 in a dask worker, where each of the worker's threads runs a subject."""
    return min(len(os.sched_getaffinity(0)), MAX_SUBJECT_THREADS) if in_process else 1


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

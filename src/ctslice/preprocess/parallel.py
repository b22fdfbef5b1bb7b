"""Fan a per-item function out over dask.distributed: a local cluster on this machine's cores by default, or an
existing cluster (`--dask-scheduler tcp://host:8786` or a scheduler file). Results come back as they finish.
Only small records travel back to this process; the arrays are written by the workers themselves."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from ..errors import CtsliceError

CONNECT_TIMEOUT = "30s"  # to an existing scheduler; a busy cluster can take a while to answer

T = TypeVar("T")
R = TypeVar("R")


@contextmanager
def dask_client(workers: int, scheduler: str | None):
    from dask.distributed import Client, LocalCluster

    if scheduler:
        try:
            if Path(scheduler).is_file():
                client = Client(scheduler_file=scheduler, timeout=CONNECT_TIMEOUT)
            else:
                client = Client(scheduler, timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError, ValueError) as e:
            raise CtsliceError(f"cannot reach the dask scheduler at {scheduler}: {e}") from None
        with client:
            yield client
        return
    # distributed sets MALLOC_TRIM_THRESHOLD_=64 KiB in the workers it spawns. Setting it switches off glibc's
    # adaptive mmap threshold, so every large temporary (decompression buffers, slices) is a fresh mmap and
    # page-faults: measured 4.5 s against 3.1 s per 512x512x90 subject. Our workers keep glibc's default.
    import dask

    environ = {k: v for k, v in dask.config.get("distributed.nanny.pre-spawn-environ", {}).items()
               if k != "MALLOC_TRIM_THRESHOLD_"}
    with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}), \
            LocalCluster(**local_cluster_options(workers), silence_logs=logging.ERROR) as cluster, \
            Client(cluster) as client:
        yield client


def local_cluster_options(workers: int) -> dict:
    """One thread per process: the work is numpy/zlib-heavy and each worker should hold one subject at a time.
    Everything listens on the loopback interface only, and there is no dashboard: a dashboard on ":0" would
    listen on all interfaces, open to anyone on the network."""
    return {"n_workers": workers, "threads_per_worker": 1, "processes": True, "host": "127.0.0.1",
            "dashboard_address": None}


def map_unordered(fn: Callable[[T], R], items: Sequence[T], workers: int, scheduler: str | None,
                  on_error: Callable[[T, BaseException], R]) -> Iterator[R]:
    """fn(item) for each item, yielded in completion order. workers == 0 (and no scheduler) runs in this process,
    and so does a single item: starting a local cluster (~1-3 s) would only delay it.
    A task whose worker died (e.g. killed for memory) yields on_error(item, exception) instead."""
    if not items:
        return
    if (workers == 0 or len(items) == 1) and not scheduler:
        for item in items:
            yield fn(item)
        return
    from dask.distributed import as_completed

    with dask_client(workers, scheduler) as client:
        futures = client.map(fn, items, pure=False)
        item_of = {f.key: item for f, item in zip(futures, items)}
        for future in as_completed(futures):
            try:
                yield future.result()
            except Exception as e:  # the function itself never raises; this is a lost worker
                yield on_error(item_of[future.key], e)
            future.release()

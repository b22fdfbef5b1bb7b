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
    _check_tls_available()
    with dask.config.set({"distributed.nanny.pre-spawn-environ": environ, **NO_HTTP_ROUTES}), \
            LocalCluster(**local_cluster_options(workers), silence_logs=logging.ERROR) as cluster, \
            Client(cluster) as client:  # the cluster's credentials: Client(cluster) uses cluster.security
        yield client


# The scheduler and each worker always run a small HTTP server (dask's /health, /metrics, /info pages) even without
# a dashboard; it would show any local user the cluster's tasks and workers, unencrypted. With no routes it serves
# nothing (404 for every path).
NO_HTTP_ROUTES = {"distributed.scheduler.http.routes": [], "distributed.worker.http.routes": []}


def local_cluster_options(workers: int) -> dict:
    """One thread per process: the work is numpy/zlib-heavy and each worker should hold one subject at a time.

    - Everything listens on the loopback interface only, and there is no dashboard: a dashboard on ":0" would
      listen on all interfaces, open to anyone on the network.
    - `security=True`: dask's own TLS with temporary credentials made for this cluster alone
      (`Security.temporary()`: a fresh key and self-signed certificate, kept in memory, given to the scheduler,
      the workers and our client). Connections need a certificate signed by that key, so another local user
      can no longer connect to the scheduler on 127.0.0.1 and run code as the user who preprocesses.
    - The scheduler's HTTP server (see NO_HTTP_ROUTES) on a free port of its own: its default, 8787, is often taken
      by another cluster, and dask then printed "Hosting the HTTP server on port N instead" (not a dashboard)."""
    return {"n_workers": workers, "threads_per_worker": 1, "processes": True, "host": "127.0.0.1",
            "dashboard_address": None, "security": True,
            "scheduler_kwargs": {"dashboard_address": "127.0.0.1:0"}}


def _check_tls_available() -> None:
    try:
        import cryptography  # noqa: F401  (Security.temporary makes the credentials with it)
    except ImportError:
        raise CtsliceError("the local dask cluster needs the `cryptography` package for its TLS credentials "
                           "(a ctslice dependency: pip install cryptography), or use --workers 0") from None


def runs_in_process(workers: int, scheduler: str | None, items: int) -> bool:
    """Whether map_unordered runs its items here, one after the other, rather than on dask workers."""
    return (workers == 0 or items == 1) and not scheduler


def map_unordered(fn: Callable[[T], R], items: Sequence[T], workers: int, scheduler: str | None,
                  on_error: Callable[[T, BaseException], R]) -> Iterator[R]:
    """fn(item) for each item, yielded in completion order. workers == 0 (and no scheduler) runs in this process,
    and so does a single item: starting a local cluster (~1-3 s) would only delay it.
    A task whose worker died (e.g. killed for memory) yields on_error(item, exception) instead."""
    if not items:
        return
    if runs_in_process(workers, scheduler, len(items)):
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

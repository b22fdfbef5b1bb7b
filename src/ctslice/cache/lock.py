"""One writer per cache. An fcntl lock on CACHE/.lock is released by the kernel when its holder dies (SIGKILL
included), so a lock left by a dead process is simply taken over; the file's text names the current holder.
(On network filesystems without working flock, run one preprocess at a time yourself.)"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import CacheError, CacheWriteError
from .layout import LOCK_NAME


@contextmanager
def cache_lock(cache: Path) -> Iterator[None]:
    """Hold the cache's write lock, or fail at once naming the process that holds it."""
    path = Path(cache) / LOCK_NAME
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as e:  # read-only cache, no permission, full disk
        raise CacheWriteError(path, e) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CacheError(f"{cache} is being written by another preprocess ({_holder(path)}); "
                             "wait for it to finish or stop it") from None
        try:
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}).encode())
        except OSError as e:
            raise CacheWriteError(path, e) from None
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text())
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info["since"]))
        return f"pid {info['pid']} on {info['host']}, since {since}"
    except (OSError, ValueError, KeyError, TypeError):
        return "process unknown"

"""One writer per cache. An fcntl lock on CACHE/.lock is released by the kernel when its holder dies (SIGKILL
included), so a lock left by a dead process is simply taken over; the file's text names the current holder.
(On network filesystems without working flock, run one preprocess at a time yourself.)"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import CacheError, CacheWriteError
from ..files import LockHeld, acquire_lock
from .layout import LOCK_NAME


@contextmanager
def cache_lock(cache: Path) -> Iterator[None]:
    """Hold the cache's write lock, or fail at once naming the process that holds it."""
    path = Path(cache) / LOCK_NAME
    try:
        fd = acquire_lock(path)
    except LockHeld as holder:
        raise CacheError(f"{cache} is being written by another preprocess ({holder}); "
                         "wait for it to finish or stop it") from None
    except OSError as e:  # read-only cache, no permission, full disk
        raise CacheWriteError(path, e) from None
    try:
        yield
    finally:
        os.close(fd)  # closing releases the lock

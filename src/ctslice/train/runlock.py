"""One writer per run folder: two `ctslice train` with the same --out would interleave their checkpoints and
history. An fcntl lock on RUN/.lock (`files.acquire_lock`, as the cache's lock): the kernel drops it when its holder
exits or is killed (kill -9 included), so a lock left by a dead run is simply taken over; the file's text names
the holder, which the refused second run prints.

    with run_lock(out):        # CtsliceError "... is being written by another ctslice train (pid 123 on host)"
        ...
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import CtsliceError
from ..files import LockHeld, acquire_lock

LOCK_NAME = ".lock"


@contextmanager
def run_lock(out: Path) -> Iterator[None]:
    """Hold RUN/.lock (created with the folder if needed), or fail at once naming the process that holds it."""
    path = Path(out) / LOCK_NAME
    try:
        fd = acquire_lock(path)
    except LockHeld as holder:
        raise CtsliceError(f"--out {out}: is being written by another ctslice train ({holder}); one run "
                           f"folder has one writer: wait for it, stop it, or choose another --out") from None
    except OSError as e:
        raise CtsliceError(f"--out {out}: cannot create or write the run's lock file {path.name} "
                           f"({e.strerror or e})") from None
    try:
        yield
    finally:
        os.close(fd)  # closing releases the lock

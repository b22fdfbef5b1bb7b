"""One writer per run folder: two `ctslice train` with the same --out would interleave their checkpoints and
history. An fcntl lock on RUN/.lock (the cache's lock scheme, `cache/lock.py`): the kernel drops it when its holder
exits or is killed (kill -9 included), so a lock left by a dead run is simply taken over; the file's text names
the holder, which the refused second run prints.

    with run_lock(out):        # CtsliceError "... is being written by another ctslice train (pid 123 on host)"
        ...
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..cache.lock import _holder
from ..errors import CtsliceError

LOCK_NAME = ".lock"


@contextmanager
def run_lock(out: Path) -> Iterator[None]:
    """Hold RUN/.lock (created with the folder if needed), or fail at once naming the process that holds it."""
    path = Path(out) / LOCK_NAME
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as e:
        raise CtsliceError(f"--out {out}: cannot create the run's lock file {path.name} "
                           f"({e.strerror or e})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CtsliceError(f"--out {out}: is being written by another ctslice train ({_holder(path)}); one run "
                               f"folder has one writer: wait for it, stop it, or choose another --out") from None
        try:
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}).encode())
        except OSError as e:
            raise CtsliceError(f"--out {out}: cannot write the run's lock file ({e.strerror or e})") from None
        yield
    finally:
        os.close(fd)  # closing releases the lock

"""Files ctslice must handle with care. `write_atomic`: the one way ctslice writes a file that must never be seen
half-written; `read_bounded`: the one way it reads a small file it does not trust (no FIFO hang, no endless
device); `acquire_lock`: one writer at a time (the cache's and a run folder's lock).

    write_atomic(cache / "manifest.json", text, durable=True)                 # str (UTF-8) or bytes
    write_atomic(run / "checkpoint_last.pth", lambda tmp: torch.save(ckpt, tmp), durable=True)
    write_atomic(out / "a.nii.gz", lambda tmp: nib.save(img, tmp), durable=True, suffix=".nii.gz")

The content goes to a temporary name (`.<name>.<pid>.tmp<suffix>`, in the same folder or `temp_dir`, which must be
on the same file system), which is then renamed over `path`: a reader sees the old file or the new one, never
half of one, and a crash leaves at most that temporary name behind (cleanups recognise it by that pattern).

durable=True: the file is fsynced before the rename and the folder after it, so the file survives a power cut
once this returns. Use it where losing the file loses work (manifest, checkpoints, training history, evaluation
results, predictions); not for figures, which the next run draws again.

On any failure the temporary file is removed and `path` stays as it was; an OSError (full disk, no permission)
names `path`, the file the caller asked for, not the temporary name. Other errors (a writer's own) pass as they
are. A leaf module: it imports nothing from ctslice.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import stat
import time
from collections.abc import Callable
from pathlib import Path

Writer = Callable[[Path], object]
"""Writes the whole content to the path it is given (the temporary name), e.g. `lambda tmp: nib.save(img, tmp)`."""


def temporary_name(path: Path, temp_dir: Path | None = None, suffix: str = "") -> Path:
    """Where `write_atomic` writes first. `suffix` for writers that pick the format by the name (nibabel)."""
    return Path(temp_dir or Path(path).parent) / f".{Path(path).name}.{os.getpid()}.tmp{suffix}"


def write_atomic(path: Path | str, content: str | bytes | Writer, *, durable: bool, temp_dir: Path | None = None,
                 suffix: str = "") -> Path:
    """Write `content` (str as UTF-8, bytes, or a Writer) to `path` atomically; see the module text. Returns path."""
    path = Path(path)
    tmp = temporary_name(path, temp_dir, suffix)
    try:
        if callable(content):
            content(tmp)
        else:
            tmp.write_bytes(content.encode() if isinstance(content, str) else content)
        if durable:
            _fsync(tmp, os.O_RDONLY)
        os.replace(tmp, path)
        if durable:
            _fsync(path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise OSError(e.errno, e.strerror or str(e), str(path)) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _fsync(path: Path, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class NotRegularFile(OSError):
    """The path is a FIFO, a device, a folder (or, where links are not followed, a symbolic link)."""


class FileTooLarge(OSError):
    """The file holds more than the reader's limit."""


def read_bounded(path: Path | str, limit: int, *, follow_links: bool = True) -> bytes:
    """A whole regular file of at most `limit` bytes: never blocks on a FIFO (O_NONBLOCK), never reads more than
    limit + 1 bytes from anything (a link to /dev/zero ends). NotRegularFile or FileTooLarge for such a file, the
    OSError of open/read otherwise (FileNotFoundError included): callers word it for their file."""
    flags = os.O_RDONLY | os.O_NONBLOCK | (0 if follow_links else os.O_NOFOLLOW)
    fd = os.open(path, flags)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFile(f"{path} is not a regular file (a FIFO, device or folder)")
        if st.st_size > limit:
            raise FileTooLarge(f"{path} is {st.st_size} bytes, more than the {limit} expected")
        chunks, n = [], 0
        while n <= limit:
            block = os.read(fd, min(1 << 20, limit + 1 - n))
            if not block:
                break
            chunks.append(block)
            n += len(block)
        if n > limit:
            raise FileTooLarge(f"{path} grew past {limit} bytes while read")
        return b"".join(chunks)
    finally:
        os.close(fd)


class LockHeld(Exception):
    """Another process holds the lock; str() says which: 'pid P on HOST, since T'."""


def acquire_lock(path: Path) -> int:
    """Take the exclusive lock of `path` (an flock; the file is created with its folder, never through a link) and
    write this process (pid, host, time) into it, for the message of whoever is refused next. Returns the open
    descriptor: closing it releases the lock, and so does the process ending in any way (kill -9 too). LockHeld at
    once when another process holds it; the OSError of creating or writing the file otherwise."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockHeld(lock_holder(path)) from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}).encode())
    except BaseException:
        os.close(fd)
        raise
    return fd


def lock_holder(path: Path) -> str:
    """'pid P on HOST, since T' from a lock file `acquire_lock` wrote, or 'process unknown'."""
    try:
        info = json.loads(Path(path).read_text())
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info["since"]))
        return f"pid {info['pid']} on {info['host']}, since {since}"
    except (OSError, ValueError, KeyError, TypeError):
        return "process unknown"

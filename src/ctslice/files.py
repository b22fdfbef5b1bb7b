"""`write_atomic`: the one way ctslice writes a file that must never be seen half-written.

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

import os
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

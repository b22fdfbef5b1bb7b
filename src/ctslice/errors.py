"""Errors a user can act on. The CLI prints them on one line and exits non-zero; anything else is a bug."""

from __future__ import annotations


class CtsliceError(Exception):
    """A known, user-facing problem (bad input, unusable cache, wrong option)."""


class InputError(CtsliceError):
    """A problem with one subject's input files, named by subject and file."""

    def __init__(self, subject: str, file: str | None, reason: str):
        self.subject, self.file, self.reason = subject, file, reason
        where = f"{subject}: {file}" if file else subject
        super().__init__(f"{where}: {reason}")


class CacheError(CtsliceError):
    """A cache that cannot be used as asked: missing, damaged, locked or of another format."""


class CacheFormatError(CacheError):
    """A cache written in another format version: readers refuse it, preprocess rebuilds it."""


class CacheWriteError(CacheError):
    """The operating system refused a write to the cache (full disk, read-only, no permission). Raised before the
    manifest swap, so the previous version of the cache is intact, and the message says so."""

    def __init__(self, path: object, error: OSError):
        self.error = error
        reason = error.strerror or str(error)
        super().__init__(f"{path}: cannot write ({reason}); nothing was changed, the previous cache is intact")

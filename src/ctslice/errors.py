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

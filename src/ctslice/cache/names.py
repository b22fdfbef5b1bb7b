"""The one check for names read from files (a dataset's folders, a manifest, a checkpoint, a label map) before
they become part of a path: subject ids, structure names of split masks.

    check_name("s0001", "subject id")      # "s0001"
    check_name("a/../../x", "subject id")  # CtsliceError: ... is not a safe file name ...

A safe name is 1-128 characters of letters, digits, '.', '_' and '-', starting with a letter or digit: no '/',
no '..' of its own, no NUL, no newline (matched with fullmatch: `re.match` accepts 'a/../../x', '$' a final
newline), short enough that `<id>-<key16>` and `<id>.itksnap.txt` stay far below the 255 bytes of a file name.
"""

from __future__ import annotations

import re

from ..errors import CtsliceError

SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
RULE = "letters, digits, '.', '_', '-', starting with a letter or digit, at most 128 characters"


def is_safe_name(name: object) -> bool:
    return isinstance(name, str) and SAFE_NAME.fullmatch(name) is not None


def check_name(name: object, what: str) -> str:
    """`name` if it may be a file or folder name inside one of our folders, else a CtsliceError naming it."""
    if not is_safe_name(name):
        shown = repr(name) if not isinstance(name, str) or len(name) <= 60 else f"{name[:60]!r}... ({len(name)} chars)"
        raise CtsliceError(f"{what} {shown} is not a safe file name ({RULE}); refused")
    return name

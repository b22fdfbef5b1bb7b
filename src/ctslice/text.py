"""Short lists in one-line messages. A leaf module: it imports nothing from ctslice."""

from __future__ import annotations

from collections.abc import Iterable


def first_few(items: Iterable[object], limit: int = 5, separator: str = ", ") -> str:
    """The first `limit` items and how many more: 'a, b, c, d, e and 7 more'; all of them when that is all."""
    items = [str(item) for item in items]
    shown = separator.join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")

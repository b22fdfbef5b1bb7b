"""`ctslice cache ...`: inspect, check and clean a slice cache."""

from __future__ import annotations

from .app import cache_app  # noqa: F401

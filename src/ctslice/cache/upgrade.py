"""Upgrade a format-2 cache (every subject's record inside manifest.json) to format 3 in place, once.

Nothing is computed again: the subject folders stay as they are (the cached arrays did not change format). Each
record is written to its own file, each folder's size is taken, a slice index with the per-subject statistics is
built from the subjects' small arrays, and a format-3 manifest replaces the old one atomically: a kill before that
leaves the format-2 cache as it was (plus unreferenced record files and an index, removed by a later run). The
preprocess run that finds a format-2 cache does this under the cache's lock, says so in one line, and goes on.
"""

from __future__ import annotations

from pathlib import Path

from . import lease, store
from .manifest import UPGRADABLE, FORMAT_VERSION, Manifest, read_format2, read_manifest, write_manifest
from .slice_index import updated_index
from .statistics import dataset_statistics


def upgrade_format2(cache: Path) -> tuple[Manifest, str]:
    """(the upgraded manifest, the line that says so). Call with the cache's lock held. Raises CacheError when
    the format-2 manifest itself is damaged (as reading it would)."""
    manifest = read_format2(cache)
    notes: list[str] = []
    index, _ = updated_index(cache, None, manifest.subjects, manifest.num_labels, notes)
    manifest.slice_index = store.write_slice_index(cache, index)
    manifest.statistics = dataset_statistics(index, (r.slices for r in manifest.subjects.table.values()),
                                             manifest.labels)
    manifest.subjects.save(cache)
    lease.record_version(cache, manifest)
    write_manifest(cache, manifest)
    line = (f"upgraded the cache's bookkeeping from format {UPGRADABLE} to {FORMAT_VERSION} in place "
            f"({len(manifest.subjects)} subject(s), nothing computed again)")
    return read_manifest(cache), "; ".join([line, *notes])

"""`cache verify` of a cache on object storage: the objects IN THE STORE are checked, not the mirror's copies.

The current version (manifest, record files, slice index, every subject folder) is fetched fresh into a
temporary folder beside the mirror and checked there by the same `verify_cache` as a local cache (every chunk's
crc32c, decoding, statistics); each problem then names the store's object instead of the temporary file. Needs
the cache's size in free disk for the time of the check.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from ..errors import CacheError
from . import layout
from .manifest import read_manifest
from .mirror import remote_of
from .verify import Problem, ProgressFn, VerifyReport, verify_cache


def verify_store(mirror: Path, workers: int = 4, progress: ProgressFn | None = None) -> VerifyReport:
    remote = remote_of(mirror)
    if remote is None:
        raise CacheError(f"{mirror}: not the mirror of a cache on object storage")
    url = remote.store.url
    fresh = Path(tempfile.mkdtemp(prefix=".verify-", dir=Path(mirror).parent))
    try:
        data = remote.store.get(layout.MANIFEST_NAME)
        if data is None:
            raise CacheError(f"{url}: no {layout.MANIFEST_NAME}")
        (fresh / layout.MANIFEST_NAME).write_bytes(data)
        manifest = read_manifest(fresh)
        remote.pull_bookkeeping(manifest, fresh)
        for row in manifest.subjects.table.values():
            remote._download_folder(row.path, fresh)
        report = verify_cache(fresh, workers, progress)
    except CacheError as e:
        raise CacheError(str(e).replace(str(fresh), url)) from None
    finally:
        shutil.rmtree(fresh, ignore_errors=True)
    table = manifest.subjects.table
    sharded = manifest.settings.layout == "shards"
    report.problems = [_named(p, url, table[p.subject].path if p.subject in table else None, str(fresh), sharded)
                       for p in report.problems]
    report.cache, report.leftovers = Path(mirror), []
    return report


def _named(problem: Problem, url: str, folder: str | None, fresh: str, sharded: bool = False) -> Problem:
    """The problem with the store's object named: a slice's chunk (its array's one shard in the "shards" layout),
    else the subject's folder."""
    text = problem.message.replace(fresh, url)
    array = text.split(":", 1)[0]
    if folder is not None and problem.slice is not None and array in ("image", "label"):
        text += f" (object {url}/{folder}/{layout.chunk_key(array, 0 if sharded else problem.slice, 0, 0)})"
    elif folder is not None and url not in text:
        text += f" (objects under {url}/{folder}/)"
    return Problem(text, problem.subject, problem.slice)

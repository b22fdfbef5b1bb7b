"""The thin layer over the object-store client (obstore: Rust, signs and retries its own requests; no HTTP or
S3 code here). Keys are relative to the cache's prefix; the store never sees a key outside it.

Deletion goes through `delete_owned`, which accepts only keys that lie under subjects/, records/ or
slice_index/ with a name the cache gives (cache/layout.py's rules) and that look like what ctslice writes
there: keys read from a manifest or a listing are untrusted input.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ..errors import CacheError
from . import layout

# What a subject folder or slice index holds: zarr metadata and chunks (one per slice, or one shard per array).
_GROUP_FILE = re.compile(r"(zarr\.json|[a-z_]+/zarr\.json|[a-z_]+/c(/\d+)+)")
CONCURRENCY = 16
"""Requests in flight when a folder is moved (each ~5 ms against a store on the same machine)."""


def is_group_file(rel: str) -> bool:
    """A file of a zarr group as ctslice writes them (relative to the group's folder)."""
    return bool(_GROUP_FILE.fullmatch(rel))


def owned_key(key: str) -> bool:
    """Does `key` (relative to the prefix) name something a ctslice cache writes, which it may therefore delete?"""
    parts = key.split("/", 2)
    if len(parts) == 2 and parts[0] == layout.RECORDS_DIR:
        return layout.is_owned_name(layout.RECORDS_DIR, parts[1])
    if len(parts) == 3 and parts[0] in (layout.SUBJECTS_DIR, layout.INDEX_DIR):
        return layout.is_owned_name(parts[0], parts[1]) and is_group_file(parts[2])
    return False


@dataclass
class ObjectStore:
    """An S3 bucket and prefix. `options` holds obstore's S3 configuration (credentials included): kept in memory
    only, never shown (`__repr__`), and handed to worker processes by pickling, never written anywhere."""

    bucket: str
    prefix: str
    options: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._client = None

    def __getstate__(self) -> dict:
        return {"bucket": self.bucket, "prefix": self.prefix, "options": self.options}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._client = None

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    @property
    def client(self):
        if self._client is None:
            from obstore.store import S3Store

            options = dict(self.options)
            client_options = {"allow_http": True} if options.pop("allow_http", False) else {}
            self._client = S3Store(self.bucket, prefix=self.prefix or None, config=options,
                                   client_options=client_options)
        return self._client

    def _failed(self, what: str, key: str, e: Exception) -> CacheError:
        # obstore's messages name the request (URL and status), never the credentials
        text = str(e).splitlines()[0] if str(e) else type(e).__name__
        for secret in (self.options.get("secret_access_key"), self.options.get("session_token")):
            if secret:
                text = text.replace(str(secret), "***")
        return CacheError(f"{self.url}/{key}: cannot {what} ({text[:300]})")

    def get(self, key: str) -> bytes | None:
        """The object's bytes, or None when there is none."""
        import obstore
        from obstore.exceptions import NotFoundError

        try:
            return bytes(obstore.get(self.client, key).bytes())
        except (FileNotFoundError, NotFoundError):
            return None
        except Exception as e:  # noqa: BLE001  (network, permissions: one message naming the object)
            raise self._failed("read", key, e) from None

    def exists(self, key: str) -> bool:
        import obstore
        from obstore.exceptions import NotFoundError

        try:
            obstore.head(self.client, key)
            return True
        except (FileNotFoundError, NotFoundError):
            return False
        except Exception as e:  # noqa: BLE001
            raise self._failed("look up", key, e) from None

    def put(self, key: str, data: bytes) -> None:
        """One PUT: the object is the old or the new bytes for every reader, never a mix."""
        import obstore

        try:
            obstore.put(self.client, key, data)
        except Exception as e:  # noqa: BLE001
            raise self._failed("write", key, e) from None

    def put_many(self, items: Iterable[tuple[str, bytes | Any]]) -> None:
        """PUT (key, bytes or a callable giving them) pairs concurrently; the first failure is raised."""
        def one(item: tuple[str, Any]) -> None:
            key, data = item
            self.put(key, data() if callable(data) else data)

        with ThreadPoolExecutor(CONCURRENCY) as pool:
            list(pool.map(one, items))

    def get_many(self, keys: Iterable[str]) -> Iterator[tuple[str, bytes | None]]:
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            keys = list(keys)
            yield from zip(keys, pool.map(self.get, keys))

    def list(self, prefix: str) -> list[tuple[str, int]]:
        """(key, size) of every object under `prefix` (a folder: ends with '/')."""
        import obstore

        try:
            found = []
            for batch in obstore.list(self.client, prefix=prefix):
                found += [(meta["path"], int(meta["size"])) for meta in batch]
            return found
        except Exception as e:  # noqa: BLE001
            raise self._failed("list", prefix, e) from None

    def is_empty(self) -> bool:
        """No object under the prefix (one listing request)."""
        import obstore

        try:
            return not any(len(batch) for batch in obstore.list(self.client, chunk_size=1))
        except Exception as e:  # noqa: BLE001
            raise self._failed("list", "", e) from None

    def folders(self, prefix: str) -> list[str]:
        """The names of the 'folders' directly under `prefix` (which ends with '/')."""
        import obstore

        try:
            result = obstore.list_with_delimiter(self.client, prefix=prefix)
        except Exception as e:  # noqa: BLE001
            raise self._failed("list", prefix, e) from None
        return [p.rstrip("/").rsplit("/", 1)[-1] for p in result["common_prefixes"]]

    def delete_owned(self, keys: Iterable[str]) -> list[str]:
        """Delete `keys` that pass `owned_key`; returns the ones refused (not ctslice's to delete)."""
        import obstore

        keys = list(keys)
        refused = [k for k in keys if not owned_key(k)]
        allowed = [k for k in keys if owned_key(k)]
        for start in range(0, len(allowed), 1000):
            try:
                obstore.delete(self.client, allowed[start:start + 1000])
            except Exception as e:  # noqa: BLE001
                raise self._failed("delete", allowed[start], e) from None
        return refused

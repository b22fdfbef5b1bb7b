"""Where a cache lives: a local folder, or `s3://bucket/prefix` on any S3-compatible object store.

    open_cache("cache")                               -> Path("cache")
    open_cache("s3://bucket/ct/cache", storage, [...]) -> the local mirror's folder (cache/mirror.py), its
                                                         bookkeeping pulled from the store

Everything downstream works on the returned folder. Storage options, lowest precedence first: the environment
(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_ENDPOINT_URL, AWS_REGION or AWS_DEFAULT_REGION,
AWS_ALLOW_HTTP), the [storage] config section (endpoint, region, allow_http: config/storage.py), then
`--storage-option key=value` flags. Credentials stay in memory: they are never written into the cache, the mirror,
a manifest, a log or a training run's config, and never appear in an error message.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..config import StorageConfig
from ..errors import CtsliceError

SCHEME = "s3://"
_URL = re.compile(r"s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:/([A-Za-z0-9._/-]*))?")
_ENV = {"AWS_ACCESS_KEY_ID": "access_key_id", "AWS_SECRET_ACCESS_KEY": "secret_access_key",
        "AWS_SESSION_TOKEN": "session_token", "AWS_ENDPOINT_URL": "endpoint", "AWS_DEFAULT_REGION": "region",
        "AWS_REGION": "region", "AWS_ALLOW_HTTP": "allow_http"}  # AWS_REGION after the default: it wins
OPTION_KEYS = frozenset({"access_key_id", "secret_access_key", "session_token", "endpoint", "region", "allow_http",
                         "virtual_hosted_style_request", "skip_signature", "unsigned_payload", "request_payer"})
"""Keys `--storage-option` accepts (obstore's S3 configuration keys)."""
_TRUE = {"true", "1", "yes"}


def is_remote(cache: str | os.PathLike) -> bool:
    return str(cache).startswith(SCHEME)


def parse_url(url: str) -> tuple[str, str]:
    """(bucket, prefix) of s3://bucket/prefix; the prefix is a plain key path (no '..', no empty parts)."""
    match = _URL.fullmatch(url.rstrip("/"))
    prefix = (match.group(2) or "") if match else ""
    if not match or any(part in ("", ".", "..") for part in prefix.split("/") if prefix):
        raise CtsliceError(f"--cache {url}: not an s3://bucket/prefix URL (bucket: 3-63 lowercase letters, digits, "
                           "'.', '-'; prefix: letters, digits, '.', '_', '-', '/')")
    return match.group(1), prefix


def storage_options(storage: StorageConfig = StorageConfig(), given: Iterable[str] = (),
                    environ: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """obstore's S3 configuration from the environment, then [storage], then `--storage-option key=value`s."""
    options: dict[str, Any] = {_ENV[name]: value for name, value in environ.items() if name in _ENV and value}
    if "allow_http" in options:
        options["allow_http"] = str(options["allow_http"]).lower() in _TRUE
    for key in ("endpoint", "region"):
        if getattr(storage, key) is not None:
            options[key] = getattr(storage, key)
    if storage.allow_http:
        options["allow_http"] = True
    for item in given:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in OPTION_KEYS:
            raise CtsliceError(f"--storage-option {key!r}: give key=value with a key among "
                               f"{', '.join(sorted(OPTION_KEYS))}")  # the value is never echoed: it may be a secret
        options[key] = value.lower() in _TRUE if key == "allow_http" else value
    return options


def mirror_folder(url: str, storage: StorageConfig = StorageConfig(), endpoint: str | None = None) -> Path:
    """The local mirror of `url`: [storage] local_cache, else $XDG_CACHE_HOME/ctslice/<hash> (~/.cache/...). The
    hash covers the endpoint too, so two stores with the same bucket name never share a mirror."""
    if storage.local_cache:
        return Path(storage.local_cache).expanduser()
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ctslice"
    return root / hashlib.sha256(f"{endpoint or ''} {url.rstrip('/')}".encode()).hexdigest()[:16]


def open_cache(cache: str | os.PathLike, storage: StorageConfig = StorageConfig(), given: Iterable[str] = (),
               *, writing: bool = False) -> Path:
    """The folder to work on for `cache`: itself when local, else the mirror of the store, its bookkeeping pulled
    (`writing`: a preprocess may create the cache there)."""
    if not is_remote(cache):
        return Path(cache)
    from .mirror import Remote
    from .object_store import ObjectStore

    url = str(cache).rstrip("/")
    bucket, prefix = parse_url(url)
    options = storage_options(storage, given)
    remote = Remote(ObjectStore(bucket, prefix, options), mirror_folder(url, storage, options.get("endpoint")),
                    int(storage.local_cache_gib * 2**30))
    return remote.open(writing)


def shown(cache: str | os.PathLike) -> str:
    """How to name a cache folder to the user and in a run's records: the store's URL for a mirror."""
    from .mirror import remote_of

    remote = remote_of(Path(cache))
    return remote.store.url if remote is not None else str(cache)

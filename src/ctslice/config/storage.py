"""Section of the one typed configuration: where a cache on object storage lives and its local mirror ([storage]).

Credentials are not settings: they come from the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_SESSION_TOKEN) or `--storage-option`, and are never saved (this section is saved with every training run)."""

from __future__ import annotations

from dataclasses import dataclass

from .checks import Limit, Pattern, check_section


@dataclass(frozen=True)
class StorageConfig:
    """A cache given as `--cache s3://bucket/prefix` (cache/location.py)."""

    endpoint: str | None = None
    """S3 endpoint URL for S3-compatible stores (MinIO, Ceph, R2: http(s)://host:port); None: AWS_ENDPOINT_URL,
    else AWS itself."""

    region: str | None = None
    """Region of the bucket; None: AWS_REGION or AWS_DEFAULT_REGION, else us-east-1."""

    allow_http: bool = False
    """Allow a plain http:// endpoint (a store on the same machine or a trusted network)."""

    local_cache: str | None = None
    """Folder of the local mirror (bookkeeping and the subjects read so far); None: ~/.cache/ctslice/<hash of the
    URL>. Each machine has its own."""

    local_cache_gib: float = 100.0
    """Subject folders the mirror keeps at most, in GiB; the least recently fetched go first above it."""

    SECTION = "storage"
    LIMITS = {
        "endpoint": Pattern(r"https?://[^\s@/]+(/[^\s@]*)?", "an http(s):// URL without credentials"),
        "region": Pattern(r"[a-z0-9-]{1,64}", "a region name (letters, digits, -)"),
        "local_cache": Pattern(r".{1,4096}", "a folder"),
        "local_cache_gib": Limit(0.01, 1 << 20, unit="GiB"),
    }
    NONE_WORDS = {"endpoint": "the environment's or AWS", "region": "the environment's",
                  "local_cache": "~/.cache/ctslice/<hash>"}

    def validate(self) -> None:
        check_section(self)

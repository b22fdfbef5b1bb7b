"""`--cache s3://bucket/prefix` for every command that reads or writes a cache: the one place the CLI turns a
cache argument into the folder the library works on (a local folder, or the local mirror: cache/location.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

StorageOptions = Annotated[Optional[list[str]], typer.Option(
    "--storage-option", help="For a cache on object storage (--cache s3://bucket/prefix): key=value, repeatable, "
    "e.g. endpoint=http://127.0.0.1:9000, allow_http=true, region=eu-west-1. Credentials are best left to "
    "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY; neither is ever written anywhere.")]


def opened(cache: str | Path, options: list[str] | None, config: Path | list[Path] | None = None,
           writing: bool = False) -> Path:
    """The folder to work on for `cache` (the [storage] section of `config`, if any, for a store)."""
    from ..cache.location import is_remote, open_cache

    if not is_remote(cache):
        if options:
            from ..errors import CtsliceError

            raise CtsliceError("--storage-option is for a cache on object storage (--cache s3://...)")
        return Path(cache)
    from ..config import StorageConfig, load_config

    storage = load_config(config).storage if config else StorageConfig()
    return open_cache(cache, storage, options or (), writing=writing)

"""Settings stick: an existing cache's own settings are the defaults of its update.

A run resolves its configuration as defaults < the cache's settings < a TOML file < the settings given
explicitly, so that updating a 128 px cache without naming a size keeps 128 px, whoever calls (the CLI, a
script, a test). When the manifest is unusable (what `--force` rebuilds), the settings are recovered where they
still can be (manifest.recover_settings), and the run says from where, or that the defaults are used.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..cache.manifest import OldFormat, manifest_path, read_settings, recover_settings
from ..cache.mirror import remote_of
from ..cache.settings import CacheSettings
from ..config import Config, PreprocessConfig, load_config
from ..errors import CacheError, CacheFormatError

Given = Mapping[str, Any] | PreprocessConfig | None
"""What the caller gives: [preprocess] values by name (None = not given, as a command line leaves them), or a
whole PreprocessConfig (every field given), or nothing (the cache's settings, else the defaults)."""


@dataclass(frozen=True)
class StoredSettings:
    settings: CacheSettings | None
    """What the cache was built with; None for a new cache, one of another format (rebuilt anyway) or an
    unusable manifest whose settings could not be recovered."""
    recovered_from: str | None = None
    """For an unusable manifest: where the settings came from, or "none readable"; None otherwise."""


def stored_settings(cache: Path) -> StoredSettings:
    """The settings an existing cache was built with: the defaults of its update."""
    if not manifest_path(cache).exists():
        return StoredSettings(None)
    try:
        return StoredSettings(read_settings(cache))  # the plan reads (and checks) the whole manifest
    except OldFormat:  # upgraded by the run, which keeps its settings
        return StoredSettings(recover_settings(cache)[0])
    except CacheFormatError:
        return StoredSettings(None)
    except CacheError:
        settings, origin = recover_settings(cache)
        return StoredSettings(settings, origin)


def resolve_config(cache: Path, given: Given = None, config_file: Path | None = None
                   ) -> tuple[PreprocessConfig, StoredSettings]:
    """The configuration of a run on `cache`: defaults < the cache's own settings < `config_file`'s [preprocess]
    < `given`. Raises ConfigError naming where a bad value came from."""
    if isinstance(given, PreprocessConfig):
        given.validate()
        return given, StoredSettings(None)
    stored = stored_settings(cache)
    if stored.settings is not None:
        base = Config(preprocess=stored.settings.config())
    elif remote_of(cache) is not None:  # a new cache on object storage: one object per array and subject (README)
        base = Config(preprocess=replace(Config().preprocess, layout="shards"))
    else:
        base = Config()
    return load_config(config_file, {"preprocess": dict(given or {})}, base=base).preprocess, stored


def rebuild_settings_note(origin: str, cfg: PreprocessConfig) -> str:
    """What `preprocess --force` over an unusable manifest says before it starts: the settings it will use and
    why (recovered, and from where, or the defaults), and how to give others."""
    values = (f"spacing {'native' if cfg.spacing is None else f'{cfg.spacing} mm'}, size {cfg.size}, "
              f"HU [{cfg.hu_min}, {cfg.hu_max}], val_fraction {cfg.val_fraction}, seed {cfg.seed}")
    how = "--spacing, --size, --hu-min, --hu-max, --val-fraction, --seed or --config"
    if origin == "none readable":
        return (f"the manifest is unusable and no copy of the cache's settings is readable: the rebuild uses the "
                f"defaults and the flags given ({values}); to rebuild with the cache's own settings, pass them "
                f"({how})")
    return (f"the manifest is unusable: the rebuild uses the cache's settings recovered from {origin} and the "
            f"flags given ({values}); {how} change them")

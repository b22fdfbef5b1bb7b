"""The whole configuration (`Config`) and how it is resolved: defaults (or a cache's own settings) < a resumed
run's own settings < a TOML file < command-line flags, unknown keys and wrong types rejected."""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..files import FileTooLarge, NotRegularFile, read_bounded
from .checks import ConfigError, check_section, check_value, kind, show
from .data import LoaderConfig, PreprocessConfig
from .evaluation import EvaluateConfig
from .storage import StorageConfig
from .augment import AugmentConfig
from .training import ModelConfig, TrainConfig


@dataclass(frozen=True)
class Config:
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    loader: LoaderConfig = field(default_factory=LoaderConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)

    def to_dict(self) -> dict[str, Any]:
        """The resolved configuration as plain JSON-able data, to save with a run (training checkpoints;
        preprocessing saves its settings in the cache's manifest)."""
        return dataclasses.asdict(self)


def parse_spacing(value: Any) -> Any:
    """'native' (or None) keeps each subject's spacing; a number, or a string of one (the command line), is
    millimetres. Anything else is returned as is, for the checks to name (a bool is not a number)."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "native"):
        return None
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"spacing must be a number of mm or 'native', got {value!r}") from None
    return value


MAX_CONFIG_BYTES = 1 << 20
"""A configuration file is a few hundred bytes; anything past a megabyte is not one."""


def read_toml(path: Path) -> dict[str, Any]:
    """A TOML file's tables. Only a regular file is read (a FIFO would wait for a writer forever, a device never
    end), UTF-8 only; every problem is one ConfigError naming the file."""
    try:
        raw = read_bounded(path, MAX_CONFIG_BYTES)
    except NotRegularFile:
        raise ConfigError(f"config {path} is not a regular file (a FIFO, device or folder); give a TOML file") from None
    except FileTooLarge:
        raise ConfigError(f"config {path} is over {MAX_CONFIG_BYTES} bytes; a TOML config is a few hundred") from None
    except OSError as e:
        raise ConfigError(f"cannot read config {path}: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"config {path} is not UTF-8 text (byte {e.start}: {raw[e.start:e.start + 1]!r}); "
                          "TOML files are UTF-8") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"cannot read config {path}: {e}") from None


SECTIONS: dict[str, type] = {f.name: f.default_factory for f in dataclasses.fields(Config)}  # type: ignore[misc]
"""Section name -> its class: [preprocess] -> PreprocessConfig, ..."""


def _sections(layer: Any, where: str) -> dict[str, Mapping[str, Any]]:
    """A layer's sections, each a table of settings; a section given as a value, or a setting outside any
    section, is named with the section it belongs in."""
    if not isinstance(layer, Mapping):
        raise ConfigError(f"{where}: settings must be a table of sections ([train], [model], ...), got {kind(layer)}")
    for name, values in layer.items():
        if name not in SECTIONS:
            homes = [s for s, cls in SECTIONS.items() if name in {f.name for f in dataclasses.fields(cls)}]
            if homes and not isinstance(values, Mapping):
                raise ConfigError(f"{where}: {name} = {show(values)} is outside any section; put it under "
                                  f"[{'] or ['.join(homes)}]")
            raise ConfigError(f"{where}: unknown section(s) {_name(name)}; known: {', '.join(SECTIONS)}")
        if not isinstance(values, Mapping):
            raise ConfigError(f"{where}: {name} = {show(values)} must be a section ([{name}] and its settings on the "
                              f"lines below), got {kind(values)}")
    return dict(layer)


def _name(key: Any) -> str:
    """A key as written, or quoted when it is no plain name (a quoted TOML key may hold escapes or spaces)."""
    return key if isinstance(key, str) and key.isidentifier() else repr(key)


def _merge(section: Any, values: Mapping[str, Any], where: str, origins: dict[str, str]) -> Any:
    """`values` over a section, each value checked alone (type, finite, range) and named with `where`; the
    rules between fields are checked once all layers are in (check_section)."""
    cls = type(section)
    known = {f.name for f in dataclasses.fields(section)}
    unknown = sorted(set(values) - known, key=str)
    moved = [name for name in unknown if name in getattr(cls, "MOVED", {})]
    if moved:
        name, home = moved[0], cls.MOVED[moved[0]]
        raise ConfigError(f"{where} [{cls.SECTION}]: {name} is now set in [{home}] ({name} = {show(values[name])} "
                          f"under [{home}]), shared with training")
    if unknown:
        raise ConfigError(f"{where} [{cls.SECTION}]: unknown setting(s) {', '.join(map(_name, unknown))}; known: "
                          f"{', '.join(sorted(known))}")
    if "spacing" in values:  # TOML has no null, so "native" stands for None there and on the command line
        try:
            values = {**values, "spacing": parse_spacing(values["spacing"])}
        except ConfigError:
            pass  # a string that is no number: check_value names it, with where it came from
    for name, value in values.items():
        problem = check_value(cls, name, value)
        if problem:
            raise ConfigError(f"{where} [{cls.SECTION}]: {name} {problem}")
        origins[name] = where
    return dataclasses.replace(section, **values)


def _resolve(layers: list[tuple[str, Any, bool]], base: Config | None = None) -> Config:
    """Layers (where, {section: {key: value}}, whether None means "not given") over `base` in order, then every
    section checked whole, naming the layer each value involved came from."""
    cfg = base or Config()
    origins: dict[str, dict[str, str]] = {name: {} for name in SECTIONS}
    for where, layer, none_is_unset in layers:
        for name, values in _sections(layer, where).items():
            values = {k: v for k, v in values.items() if not (none_is_unset and v is None)}
            cfg = dataclasses.replace(cfg, **{name: _merge(getattr(cfg, name), values, where, origins[name])})
    for name in SECTIONS:
        check_section(getattr(cfg, name), "", origins[name])
    return cfg


def validate_settings(settings: Mapping[str, Any], where: str, base: Config | None = None) -> Config:
    """THE check of settings from anywhere: {"train": {...}, "model": {...}, ...}, as a TOML file, Config.to_dict()
    or a checkpoint's "config" holds them (for a cache manifest's flat settings: {"preprocess": flat}). Sections
    and keys left out keep `base`'s values (the defaults); None is a value here (spacing None = native).
    Returns the resolved Config; raises ConfigError naming `where` (a file), the section, the key and the value
    (types: a bool is not a number; numbers finite and in range; choices; rules between fields)."""
    return _resolve([(where, settings, False)], base)


RUN_SECTIONS = ("loader", "model", "train", "augment")
"""The sections a training run is made of: a resumed run takes them from its checkpoint."""


def load_config(path: Path | list[Path] | None = None, overrides: dict[str, dict[str, Any]] | None = None,
                run_settings: dict[str, dict[str, Any]] | None = None, base: Config | None = None) -> Config:
    """`base` (default: the defaults; an existing cache's own settings are the base of its update, see
    preprocess/settings.py, so that updating a cache without flags keeps its settings), then the sections of a run
    being resumed (`run_settings`, its checkpoint's config: a resume without flags continues the same run), then
    the TOML file's sections (several files: each over the ones before it), then `overrides` ({"preprocess": {"size": 256}}; None values mean "not given" and
    are skipped, so CLI options can be passed straight through)."""
    layers: list[tuple[str, Any, bool]] = []
    if run_settings:
        run = ({name: values for name, values in run_settings.items() if name in RUN_SECTIONS}
               if isinstance(run_settings, Mapping) else run_settings)
        layers.append(("the resumed run's settings", run, False))
    for each in ([] if path is None else path if isinstance(path, list) else [path]):
        layers.append((str(each), read_toml(Path(each)), False))
    if overrides:
        layers.append(("command line", overrides, True))
    return _resolve(layers, base)

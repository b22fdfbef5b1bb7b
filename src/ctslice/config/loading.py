"""The whole configuration (`Config`) and how it is resolved: defaults < a cache's or a resumed run's own
settings < a TOML file < command-line flags, unknown keys and wrong types rejected."""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import CtsliceError
from .data import LoaderConfig, PreprocessConfig
from .evaluation import EvaluateConfig
from .training import AugmentConfig, ModelConfig, TrainConfig


@dataclass(frozen=True)
class Config:
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    loader: LoaderConfig = field(default_factory=LoaderConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)

    def to_dict(self) -> dict[str, Any]:
        """The resolved configuration as plain JSON-able data, to save with a run (training checkpoints;
        preprocessing saves its settings in the cache's manifest)."""
        return dataclasses.asdict(self)


def parse_spacing(value: str | float | None) -> float | None:
    """'native' (or None) keeps each subject's spacing; anything else is millimetres."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "native"):
        return None
    try:
        return float(value)
    except ValueError:
        raise CtsliceError(f"spacing must be a number of mm or 'native', got {value!r}") from None


def _merge(section: Any, values: dict[str, Any], where: str) -> Any:
    known = {f.name for f in dataclasses.fields(section)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise CtsliceError(f"{where}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    if "spacing" in values:  # TOML has no null, so "native" stands for None there and on the command line
        values = {**values, "spacing": parse_spacing(values["spacing"])}
    hints = typing.get_type_hints(type(section))
    for name, value in values.items():
        if not _has_type(value, hints[name]):
            raise CtsliceError(f"{where}: {name} = {value!r} should be {_type_name(hints[name])}, not "
                               f"{type(value).__name__}")
    return dataclasses.replace(section, **values)


def _has_type(value: Any, hint: Any) -> bool:
    """isinstance for the plain field types used here (int, float, str, bool and `X | None`); bool is not taken
    for int, and an int is a float."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union \
        else (hint,)
    for option in options:
        if option is type(None) and value is None:
            return True
        if option is bool and isinstance(value, bool):
            return True
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return True
        if option is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return True
        if option is str and isinstance(value, str):
            return True
    return False


def _type_name(hint: Any) -> str:
    return " or ".join("none" if a is type(None) else a.__name__ for a in (typing.get_args(hint) or (hint,)))


RUN_SECTIONS = ("loader", "model", "train", "augment")
"""The sections a training run is made of: a resumed run takes them from its checkpoint."""


def load_config(path: Path | None = None, overrides: dict[str, dict[str, Any]] | None = None,
                cache_settings: dict[str, Any] | None = None,
                run_settings: dict[str, dict[str, Any]] | None = None) -> Config:
    """Defaults, then the settings an existing cache was built with (`cache_settings`, flat as
    Manifest.stored_settings gives them: they stick, so updating a cache without flags keeps its settings), then
    the sections of a run being resumed (`run_settings`, its checkpoint's config: a resume without flags
    continues the same run), then the TOML file's sections, then `overrides` ({"preprocess": {"size": 256}};
    None values mean "not given" and are skipped, so CLI options can be passed straight through)."""
    cfg = Config()
    layers: list[tuple[str, dict[str, Any]]] = []
    if run_settings:
        layers.append(("the resumed run's settings", {name: dict(values) for name, values in run_settings.items()
                                                      if name in RUN_SECTIONS and isinstance(values, dict)}))
    if cache_settings:
        known = {f.name for f in dataclasses.fields(PreprocessConfig)}
        stored = {k: v for k, v in cache_settings.items() if k in known}
        if "spacing" in stored and stored["spacing"] is None:  # None would read as "not given"
            stored["spacing"] = "native"
        layers.append(("the cache's settings", {"preprocess": stored}))
    if path is not None:
        try:
            layers.append((str(path), tomllib.loads(Path(path).read_text())))
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise CtsliceError(f"cannot read config {path}: {e}") from e
    if overrides:
        layers.append(("command line", overrides))
    for where, layer in layers:
        unknown = sorted(set(layer) - {f.name for f in dataclasses.fields(cfg)})
        if unknown:
            raise CtsliceError(f"{where}: unknown section(s) {', '.join(unknown)}")
        for name, values in layer.items():
            values = {k: v for k, v in values.items() if v is not None}
            cfg = dataclasses.replace(cfg, **{name: _merge(getattr(cfg, name), values, f"{where} [{name}]")})
    cfg.preprocess.validate()
    cfg.loader.validate()
    cfg.model.validate()
    cfg.train.validate()
    cfg.augment.validate()
    cfg.evaluate.validate()
    return cfg

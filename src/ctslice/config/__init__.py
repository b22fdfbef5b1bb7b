"""The one typed configuration. Defaults live here and nowhere else.

Precedence: command-line flags > a TOML file (`--config FILE`, one section per dataclass)
> these defaults; when updating an existing cache, its stored settings take the defaults' place. The resolved
configuration is saved with every run: preprocessing's in the cache's manifest (`settings`), training's with its
checkpoints (`Config.to_dict`); a resumed run's own settings likewise take the defaults' place.

The sections live in `data.py` ([preprocess], [loader]), `training.py` ([model], [train], [augment]) and
`evaluation.py` ([evaluate]); `loading.py` joins them into `Config` and resolves it (`load_config`).

Checking: every field has one rule (type, finite, range or choices) in its section's LIMITS (`checks.py`); the one
entry point for settings from anywhere (a file, a checkpoint, a cache manifest) is `validate_settings(settings,
where)`, which `load_config` applies layer by layer; `Section.validate()` checks one section instance.
"""

from .data import LoaderConfig, PreprocessConfig
from .evaluation import EvaluateConfig
from .storage import StorageConfig
from .checks import ConfigError
from .loading import RUN_SECTIONS, SECTIONS, Config, load_config, parse_spacing, validate_settings
from .checks import DEVICE
from .augment import AugmentConfig
from .training import INTENSITY_SCHEMES, SCHEDULERS, WANDB_MODES, ModelConfig, TrainConfig

__all__ = [
    "DEVICE", "INTENSITY_SCHEMES", "RUN_SECTIONS", "SCHEDULERS", "SECTIONS", "WANDB_MODES", "AugmentConfig",
    "Config", "ConfigError", "EvaluateConfig", "LoaderConfig", "ModelConfig", "PreprocessConfig", "StorageConfig", "TrainConfig",
    "load_config", "parse_spacing", "validate_settings",
]

"""The one typed configuration. Defaults live here and nowhere else.

Precedence: command-line flags > a TOML file (`--config FILE`, one section per dataclass)
> these defaults; when updating an existing cache, its stored settings take the defaults' place. The resolved
configuration is saved with every run: preprocessing's in the cache's manifest (`settings`), training's with its
checkpoints (`Config.to_dict`); a resumed run's own settings likewise take the defaults' place.

The sections live in `data.py` ([preprocess], [loader]), `training.py` ([model], [train], [augment]) and
`evaluation.py` ([evaluate]); `loading.py` joins them into `Config` and resolves it (`load_config`).
"""

from .data import LoaderConfig, PreprocessConfig
from .evaluation import EvaluateConfig
from .loading import RUN_SECTIONS, Config, load_config, parse_spacing
from .training import DEVICES, INTENSITY_SCHEMES, SCHEDULERS, WANDB_MODES, AugmentConfig, ModelConfig, TrainConfig

__all__ = [
    "DEVICES", "INTENSITY_SCHEMES", "RUN_SECTIONS", "SCHEDULERS", "WANDB_MODES", "AugmentConfig", "Config",
    "EvaluateConfig", "LoaderConfig", "ModelConfig", "PreprocessConfig", "TrainConfig", "load_config",
    "parse_spacing",
]

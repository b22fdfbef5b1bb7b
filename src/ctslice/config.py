"""The one typed configuration. Defaults live here and nowhere else.

Precedence: command-line flags > a TOML file (`--config FILE`, sections named like the dataclasses below)
> these defaults; when updating an existing cache, its stored settings take the defaults' place. The resolved
configuration is saved with every run: preprocessing's in the cache's manifest (`settings`), training's with its
checkpoints (`Config.to_dict`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import CtsliceError


@dataclass(frozen=True)
class PreprocessConfig:
    """How NIfTI subjects become cached slices. Fields marked (content) change the cache's arrays:
    changing one rebuilds the whole cache; the others do not."""

    spacing: float | None = 1.5
    """(content) In-plane target spacing in mm; None ('native') keeps each subject's own spacing.
    1.5 mm is TotalSegmentator's native resolution."""

    size: int = 512
    """(content) Slice size in pixels (size x size) after resampling, centre-padded or cropped.
    512 px at 1.5 mm covers 768 mm, wider than any CT field of view, so nothing is cropped by default."""

    hu_min: int = -1024
    """(content) Lower clip of CT values in Hounsfield units (air)."""

    hu_max: int = 3071
    """(content) Upper clip in HU: the 12-bit CT range; dense bone and metal above it saturate."""

    val_fraction: float = 0.2
    """Fraction of subjects assigned to 'val' when the dataset has no official split."""

    seed: int = 0
    """Seed of the subject-level split rule."""

    workers: int = field(default_factory=lambda: len(os.sched_getaffinity(0)))
    """Local dask worker processes (one subject each at a time). 0 runs in this process without dask. A run
    starts no more than the cores available, the subjects to process and the memory allow (preprocess/workers.py)."""

    dask_scheduler: str | None = None
    """Address (tcp://host:8786) or scheduler-file path of an existing dask.distributed cluster.
    The cache folder must then be on a filesystem all workers share."""

    def content_settings(self) -> dict[str, Any]:
        """The settings that determine the cached arrays (hashed into the manifest)."""
        return {"spacing": self.spacing, "size": self.size, "hu_min": self.hu_min, "hu_max": self.hu_max}

    def split_settings(self) -> dict[str, Any]:
        return {"val_fraction": self.val_fraction, "seed": self.seed}

    def validate(self) -> None:
        if self.spacing is not None and not self.spacing > 0:
            raise CtsliceError(f"spacing must be positive mm or 'native', got {self.spacing}")
        if not 16 <= self.size <= 4096:
            raise CtsliceError(f"size must be between 16 and 4096 pixels, got {self.size}")
        if not -32768 <= self.hu_min < self.hu_max <= 32767:
            raise CtsliceError(f"need -32768 <= hu_min < hu_max <= 32767, got {self.hu_min}, {self.hu_max}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise CtsliceError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.workers < 0:
            raise CtsliceError(f"workers must be >= 0, got {self.workers}")


@dataclass(frozen=True)
class LoaderConfig:
    """How training and evaluation read the cache."""

    batch_size: int = 16
    """Slices per batch."""

    workers: int = 4
    """DataLoader worker processes (0 reads in the training process)."""

    pin_memory: bool = True
    """Page-locked batches, so host-to-GPU copies are asynchronous (ignored without CUDA)."""

    prefetch_factor: int = 4
    """Batches each worker prepares ahead."""

    persistent_workers: bool = True
    """Keep workers (and their open cache files) alive between epochs."""

    oversample_fraction: float = 0.5
    """Share of each batch drawn from slices containing a structure chosen uniformly among those present,
    so small structures are seen; the rest is drawn uniformly from all slices."""

    context_slices: int = 1
    """2.5D input: k neighbouring slices as channels (odd; 1 = plain 2D), clamped at the volume edges."""

    seed: int = 0
    """Seed of the sampler (and of worker RNGs)."""

    def validate(self) -> None:
        if self.batch_size < 1:
            raise CtsliceError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.workers < 0:
            raise CtsliceError(f"loader workers must be >= 0, got {self.workers}")
        if not 0.0 <= self.oversample_fraction <= 1.0:
            raise CtsliceError(f"oversample_fraction must be in [0, 1], got {self.oversample_fraction}")
        if self.context_slices < 1 or self.context_slices % 2 == 0:
            raise CtsliceError(f"context_slices must be odd and >= 1, got {self.context_slices}")


@dataclass(frozen=True)
class ModelConfig:
    """The 2D U-Net. Input channels come from the loader's context_slices and outputs from the cache's label map,
    so neither is set here."""

    base_width: int = 32
    """Channels of the first stage; each deeper stage doubles them (32-64-128-256-512 at depth 5)."""

    depth: int = 5
    """Stages including the bottleneck; slice sizes must be divisible by 2**(depth-1)."""

    def validate(self) -> None:
        if self.base_width < 1:
            raise CtsliceError(f"base_width must be >= 1, got {self.base_width}")
        if not 2 <= self.depth <= 8:
            raise CtsliceError(f"depth must be between 2 and 8, got {self.depth}")


SCHEDULERS = ("cosine", "plateau", "none")
INTENSITY_SCHEMES = ("window", "ct")
WANDB_MODES = ("offline", "online", "disabled")
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, schedule, loss and run settings of `ctslice train`. The label map, split, HU clip and slice
    size come from the cache's manifest and are not set here."""

    epochs: int = 20
    """Passes over the training split (or `steps_per_epoch` batches each)."""

    learning_rate: float = 1e-3
    """AdamW's peak learning rate."""

    weight_decay: float = 0.01
    """AdamW's decoupled weight decay (torch's default)."""

    scheduler: str = "cosine"
    """'cosine' (CosineAnnealingLR per epoch), 'plateau' (ReduceLROnPlateau on val Dice, mode max) or 'none'."""

    cosine_t_max: int | None = None
    """Cosine period in epochs; None = epochs."""

    cosine_eta_min: float = 1e-6
    """Learning rate the cosine reaches at t_max."""

    plateau_factor: float = 0.5
    """Plateau: multiply the learning rate by this after `plateau_patience` epochs without a better val Dice."""

    plateau_patience: int = 3
    """Plateau: epochs without improvement tolerated before reducing."""

    plateau_min_lr: float = 1e-6
    """Plateau: the learning rate never goes below this."""

    warmup_steps: int = 0
    """Linear warm-up over this many optimizer steps (0 = none), on top of the scheduler."""

    ce_weight: float = 1.0
    """Weight of the cross-entropy term of the loss."""

    dice_weight: float = 1.0
    """Weight of the soft Dice term (foreground classes) of the loss."""

    grad_clip: float | None = None
    """Clip the total gradient L2 norm to this (None = no clipping; the norm is logged either way)."""

    steps_per_epoch: int | None = None
    """Training batches per epoch; None = the whole training split once."""

    val_batches: int | None = None
    """Validation batches per epoch; None = every val slice."""

    intensity: str = "window"
    """'window': clip to [window_min, window_max] and scale to [0, 1]; 'ct': nnU-Net's CT normalisation (clip to
    the foreground's 0.5/99.5 percentiles, z-score with its mean and std, from the manifest's statistics)."""

    window_min: float | None = None
    """Lower HU of the 'window' scheme; None = the cache's own clip (hu_min)."""

    window_max: float | None = None
    """Upper HU of the 'window' scheme; None = the cache's own clip (hu_max)."""

    device: str = "auto"
    """'auto' (CUDA when available), 'cpu' or 'cuda'."""

    bf16: bool = True
    """bf16 autocast on CUDA (ignored on CPU, where it is slower)."""

    channels_last: bool = True
    """channels_last memory format on CUDA (faster convolutions with tensor cores)."""

    compile: bool = False
    """torch.compile the model (CUDA; minutes of compilation, worth it for long runs)."""

    seed: int = 0
    """Seed of model initialisation, augmentation and the torch RNGs."""

    keep_checkpoints: int = 3
    """checkpoint_epoch{N}.pth files kept (the latest ones); best and last are always kept. 0 keeps none."""

    log_every: int = 10
    """Log batch/loss, batch/dice and batch/gradient_norm every this many batches."""

    val_images: int = 4
    """Fixed val slices shown each epoch in wandb (CT with reference and predicted masks)."""

    wandb: str = "offline"
    """'offline' (a run folder under RUN/wandb, sync later with `wandb sync`), 'online' (needs WANDB_API_KEY in
    the environment) or 'disabled' (nothing is written)."""

    wandb_project: str = "ctslice"
    """wandb project name."""

    def validate(self) -> None:
        checks = [
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (0 < self.learning_rate < math.inf, f"learning_rate must be > 0, got {self.learning_rate}"),
            # torch's AdamW raises a bare ValueError for these: say which setting, as for the others
            (0 <= self.weight_decay < math.inf, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (0 <= self.cosine_eta_min < math.inf, f"cosine_eta_min must be >= 0, got {self.cosine_eta_min}"),
            (0 <= self.plateau_min_lr < math.inf, f"plateau_min_lr must be >= 0, got {self.plateau_min_lr}"),
            (self.scheduler in SCHEDULERS,
             f"scheduler must be one of {', '.join(SCHEDULERS)}, got {self.scheduler!r}"),
            (self.cosine_t_max is None or self.cosine_t_max >= 1,
             f"cosine_t_max must be >= 1, got {self.cosine_t_max}"),
            (0 < self.plateau_factor < 1, f"plateau_factor must be in (0, 1), got {self.plateau_factor}"),
            (self.plateau_patience >= 0, f"plateau_patience must be >= 0, got {self.plateau_patience}"),
            (self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps}"),
            (self.ce_weight >= 0 and self.dice_weight >= 0 and self.ce_weight + self.dice_weight > 0,
             "ce_weight and dice_weight must be >= 0 and not both 0"),
            (self.grad_clip is None or self.grad_clip > 0, f"grad_clip must be > 0, got {self.grad_clip}"),
            (self.steps_per_epoch is None or self.steps_per_epoch >= 1, "steps_per_epoch must be >= 1"),
            (self.val_batches is None or self.val_batches >= 1, "val_batches must be >= 1"),
            (self.intensity in INTENSITY_SCHEMES,
             f"intensity must be one of {', '.join(INTENSITY_SCHEMES)}, got {self.intensity!r}"),
            (self.device in DEVICES, f"device must be one of {', '.join(DEVICES)}, got {self.device!r}"),
            (self.keep_checkpoints >= 0, f"keep_checkpoints must be >= 0, got {self.keep_checkpoints}"),
            (self.log_every >= 1, f"log_every must be >= 1, got {self.log_every}"),
            (self.val_images >= 0, f"val_images must be >= 0, got {self.val_images}"),
            (self.wandb in WANDB_MODES, f"wandb must be one of {', '.join(WANDB_MODES)}, got {self.wandb!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise CtsliceError(message)


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation of training batches, on the training device; never applied to validation. No left-right
    flips: many structures are left/right pairs."""

    enabled: bool = True
    """Augment training batches at all."""

    probability: float = 0.5
    """Chance that a slice gets the spatial transform (scale and rotation)."""

    scale: float = 0.1
    """Zoom factor drawn uniformly from [1 - scale, 1 + scale]."""

    rotate_degrees: float = 10.0
    """Rotation drawn uniformly from [-rotate_degrees, rotate_degrees] (in-plane)."""

    brightness: float = 0.1
    """Additive intensity shift drawn from [-brightness, brightness] (in normalised units), per slice."""

    contrast: float = 0.1
    """Multiplicative intensity factor drawn from [1 - contrast, 1 + contrast], per slice."""

    def validate(self) -> None:
        if not 0.0 <= self.probability <= 1.0:
            raise CtsliceError(f"augment probability must be in [0, 1], got {self.probability}")
        if not 0.0 <= self.scale < 1.0 or not 0.0 <= self.contrast < 1.0:
            raise CtsliceError("augment scale and contrast must be in [0, 1)")
        if self.rotate_degrees < 0 or self.brightness < 0:
            raise CtsliceError("augment rotate_degrees and brightness must be >= 0")


@dataclass(frozen=True)
class EvaluateConfig:
    """Scoring a trained model on whole 3D subjects (`ctslice evaluate`) and predicting new CTs (`ctslice predict`)."""

    surface_tolerance_mm: float = 2.0
    """Tolerance of the normalised surface Dice in mm (Nikolov et al. 2021): the share of both surfaces lying within
    this distance of the other. TotalSegmentator reports it beside Dice."""

    detection_min_ml: float = 0.1
    """A structure counts as present in a reference or prediction from this volume on (ml), so a few stray voxels
    are not a detection."""

    detection_dice: float = 0.1
    """A structure present in both reference and prediction is a hit from this Dice on, else a miss."""

    batch_size: int = 16
    """Slices per forward pass."""

    workers: int = 2
    """DataLoader worker processes reading the cache (0 reads in this process)."""

    device: str = "auto"
    """'auto' (the GPU when there is one, else the CPU), 'cpu', 'cuda' or 'cuda:N'."""

    worst_subjects: int = 3
    """Overlay figures of this many worst subjects (lowest mean Dice)."""

    def validate(self) -> None:
        if not self.surface_tolerance_mm >= 0:
            raise CtsliceError(f"surface_tolerance_mm must be >= 0, got {self.surface_tolerance_mm}")
        if not self.detection_min_ml >= 0 or not 0 <= self.detection_dice <= 1:
            raise CtsliceError(f"need detection_min_ml >= 0 and 0 <= detection_dice <= 1, got "
                               f"{self.detection_min_ml}, {self.detection_dice}")
        if self.batch_size < 1 or self.workers < 0 or self.worst_subjects < 0:
            raise CtsliceError(f"need batch_size >= 1, workers >= 0, worst_subjects >= 0, got {self.batch_size}, "
                               f"{self.workers}, {self.worst_subjects}")
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", self.device):
            raise CtsliceError(f"device must be auto, cpu, cuda, cuda:N or mps, got {self.device!r}")


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

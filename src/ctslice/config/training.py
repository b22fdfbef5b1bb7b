"""Sections of the one typed configuration: the model ([model]) and training ([train]); augmentation
([augment]) is in augment.py."""

from __future__ import annotations

from dataclasses import dataclass

from .checks import DEVICE, SEED, ConfigError, Limit, OneOf, Relations, check_section

NORMS = ("batch", "instance")
ACTIVATIONS = ("relu", "leaky_relu")


@dataclass(frozen=True)
class ModelConfig:
    """The 2D U-Net. Input channels come from the loader's context_slices and outputs from the cache's label map,
    so neither is set here."""

    base_width: int = 32
    """Channels of the first stage; each deeper stage doubles them (32-64-128-256-512 at depth 5)."""

    depth: int = 5
    """Stages including the bottleneck; slice sizes must be divisible by 2**(depth-1)."""

    deep_supervision: bool = False
    """nnU-Net's deep supervision: 1x1 heads also at the decoder's lower stages (all but the lowest, whose loss
    weight nnU-Net sets to 0), trained on nearest-downsampled labels. Inference uses the full-resolution head
    only. Depth 3 or less has no such stage (nothing is added)."""

    norm: str = "batch"
    """Normalisation after each convolution: 'batch' (BatchNorm, running statistics used at inference) or
    'instance' (nnU-Net's InstanceNorm with a learned scale and shift: each slice normalised by its own
    statistics, in training and inference alike, so it keeps no running statistics)."""

    activation: str = "relu"
    """'relu' or 'leaky_relu' (nnU-Net's: negative slope 0.01, so no unit's gradient is ever exactly 0)."""

    SECTION = "model"
    LIMITS = {
        "base_width": Limit(1, 1024),  # 1024 already means 16,384 channels at depth 5
        "depth": Limit(2, 8),
        "norm": OneOf(NORMS),
        "activation": OneOf(ACTIVATIONS),
    }

    def validate(self) -> None:
        """Every field against its rule in LIMITS, then the rules between fields; raises ConfigError."""
        check_section(self)

    def architecture(self) -> dict:
        """The settings that shape the network, as a checkpoint's model_config records them."""
        return {"base_width": self.base_width, "depth": self.depth, "deep_supervision": self.deep_supervision,
                "norm": self.norm, "activation": self.activation}

    def size_problem(self, size: int) -> str | None:
        """Why slices of `size` px do not fit this U-Net (each of its depth - 1 poolings halves them), or None."""
        multiple = 2 ** (self.depth - 1)
        if size % multiple:
            return (f"slices of {size} px do not fit a U-Net of depth {self.depth} (needs a multiple of "
                    f"{multiple})")
        return None

    def parameter_count(self, in_channels: int, num_classes: int) -> int:
        """Parameters and BatchNorm buffers of the U-Net (`model/unet.py`) this describes, computed without
        building it: a checkpoint's weights must have exactly this many, and memory is estimated from it."""
        widths = [self.base_width * 2**i for i in range(self.depth)]
        # per norm layer: scale and shift per channel, and for BatchNorm its running mean and variance per channel
        # and one batch counter
        per_channel, per_norm = (4, 1) if self.norm == "batch" else (2, 0)

        def double_conv(c_in: int, c_out: int) -> int:  # two 3x3 convs with bias, two norm layers
            return 9 * c_in * c_out + c_out + 9 * c_out * c_out + c_out + 2 * (per_channel * c_out + per_norm)

        down = sum(double_conv(c_in, c_out) for c_in, c_out in zip([in_channels, *widths], widths))
        up = sum(4 * 2 * w * w + w + double_conv(2 * w, w) for w in widths[:-1])
        heads = sum(w * num_classes + num_classes for w in [widths[0], *self.supervised_widths()])
        return down + up + heads

    def supervised_widths(self) -> list[int]:
        """Channels of the decoder stages that get an extra (deep supervision) head: at 1/2, 1/4, ... of the
        slice size, the lowest decoder stage left out; empty without deep supervision."""
        if not self.deep_supervision:
            return []
        return [self.base_width * 2**i for i in range(1, self.depth - 2)]

    def memory_bytes(self, in_channels: int, num_classes: int, size: int) -> int:
        """Rough float32 memory to build the model and run one size x size slice through it: the weights and,
        per stage, a few activation maps of its width (what `check_memory` compares with the machine)."""
        activations = sum(self.base_width * 2**i * (size // 2**i) ** 2 for i in range(self.depth))
        return 4 * (self.parameter_count(in_channels, num_classes) + 8 * activations + num_classes * size * size)

    def check_memory(self, in_channels: int, num_classes: int, size: int) -> None:
        """Refuse, before anything is built, a model that could not fit in this machine's memory (a width or
        depth typed or edited by mistake would otherwise grow until the machine swaps or the process is killed)."""
        need, have = self.memory_bytes(in_channels, num_classes, size), physical_memory()
        if need > have:
            raise ConfigError(f"the U-Net of width {self.base_width}, depth {self.depth} at {size} px needs about "
                               f"{need / 2**30:,.1f} GiB for one slice, more than this machine's "
                               f"{have / 2**30:,.1f} GiB")


def physical_memory() -> int:
    """This machine's RAM in bytes."""
    import os

    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


SCHEDULERS = ("cosine", "plateau", "poly", "none")
OPTIMIZERS = ("adamw", "sgd")
DEFAULT_WEIGHT_DECAY = {"adamw": 0.01, "sgd": 3e-5}
"""torch's AdamW default; nnU-Net's SGD value (L2 through the gradient, so far smaller than AdamW's)."""
INTENSITY_SCHEMES = ("window", "ct")
WANDB_MODES = ("offline", "online", "disabled")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, schedule, loss and run settings of `ctslice train`. The label map, split, HU clip and slice
    size come from the cache's manifest and are not set here."""

    epochs: int = 20
    """Passes over the training split (or `steps_per_epoch` batches each)."""

    learning_rate: float = 1e-3
    """The optimizer's peak learning rate (nnU-Net's SGD uses 1e-2)."""

    optimizer: str = "adamw"
    """'adamw' (torch's AdamW) or 'sgd' (SGD with `momentum` and Nesterov when `nesterov`: nnU-Net's)."""

    weight_decay: float | None = None
    """Weight decay; None = the optimizer's usual value: 0.01 for AdamW (decoupled, torch's default), 3e-5 for SGD
    (nnU-Net's)."""

    momentum: float = 0.99
    """SGD's momentum (nnU-Net's 0.99); unused by AdamW."""

    nesterov: bool = True
    """SGD with Nesterov momentum (nnU-Net's); unused by AdamW."""

    scheduler: str = "cosine"
    """'cosine' (CosineAnnealingLR per epoch), 'plateau' (ReduceLROnPlateau on val Dice, mode max), 'poly'
    (nnU-Net's lr x (1 - epoch/epochs)^poly_exponent, per epoch) or 'none'."""

    poly_exponent: float = 0.9
    """Exponent of the 'poly' schedule (nnU-Net's 0.9)."""

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
    """Training batches per epoch, drawn by the class-aware sampler (fewer or more than one pass over the split:
    nnU-Net's epoch is 250 batches whatever the dataset's size); None = the whole training split once."""

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
    """'auto' (CUDA when available), 'cpu', 'cuda' (under torchrun each process's own GPU), 'cuda:N' (one process
    only) or 'mps'."""

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

    fold: int | None = None
    """Cross-validation: train on fold `fold` of `folds` (0 .. folds-1): the cache's train+val subjects are split
    into `folds` subject-level folds (`cache/folds.py`: by a hash of each id, stable when subjects are added), this
    fold validates and the others train; the test split is never used. None: the cache's own train/val split."""

    folds: int = 5
    """Number of cross-validation folds (with `fold`)."""

    SECTION = "train"
    LIMITS = {
        "epochs": Limit(1, 1_000_000),
        # torch's AdamW raises a bare ValueError for negative rates and decays: say which setting, as for the others
        "learning_rate": Limit(0, 10, low_open=True),
        "optimizer": OneOf(OPTIMIZERS),
        "weight_decay": Limit(0, 10),
        "momentum": Limit(0, 1, high_open=True),
        "scheduler": OneOf(SCHEDULERS),
        "poly_exponent": Limit(0, 100, low_open=True),
        "cosine_t_max": Limit(1, 1_000_000),
        "cosine_eta_min": Limit(0, 10),
        "plateau_factor": Limit(0, 1, low_open=True, high_open=True),
        "plateau_patience": Limit(0, 1_000_000),
        "plateau_min_lr": Limit(0, 10),
        "warmup_steps": Limit(0, 10**9),
        "ce_weight": Limit(0, 1000),
        "dice_weight": Limit(0, 1000),
        "grad_clip": Limit(0, 1e6, low_open=True),
        "steps_per_epoch": Limit(1, 10**9),
        "val_batches": Limit(1, 10**9),
        "intensity": OneOf(INTENSITY_SCHEMES),
        "window_min": Limit(-32768, 32767, unit="HU"),
        "window_max": Limit(-32768, 32767, unit="HU"),
        "device": DEVICE,
        "seed": SEED,
        "keep_checkpoints": Limit(0, 1_000_000),
        "log_every": Limit(1, 10**9),
        "val_images": Limit(0, 256),
        "wandb": OneOf(WANDB_MODES),
        "fold": Limit(0, 99),
        "folds": Limit(2, 100),
    }
    NONE_WORDS = {
        "weight_decay": "none: 0.01 for adamw, 3e-5 for sgd", "cosine_t_max": "none: epochs", "grad_clip": "none: no clipping", "steps_per_epoch": "none: the whole split",
        "val_batches": "none: every val slice", "window_min": "none: the cache's hu_min",
        "window_max": "none: the cache's hu_max", "fold": "none: the cache's train/val split"}

    def relations(self) -> Relations:
        if self.ce_weight + self.dice_weight == 0:
            yield ("ce_weight", "dice_weight"), "ce_weight and dice_weight must not both be 0 (no loss to train on)"
        if self.window_min is not None and self.window_max is not None and not self.window_min < self.window_max:
            yield ("window_min", "window_max"), (f"window_min must be below window_max, got {self.window_min} and "
                                                 f"{self.window_max}")
        if self.fold is not None and self.fold >= self.folds:
            yield ("fold", "folds"), f"fold must be below folds (folds are 0 .. {self.folds - 1}), got {self.fold}"

    def validate(self) -> None:
        """Every field against its rule in LIMITS, then the rules between fields; raises ConfigError."""
        check_section(self)

    @property
    def resolved_weight_decay(self) -> float:
        return DEFAULT_WEIGHT_DECAY[self.optimizer] if self.weight_decay is None else self.weight_decay

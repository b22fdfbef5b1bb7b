"""Section of the one typed configuration: evaluation and prediction ([evaluate])."""

from __future__ import annotations

from dataclasses import dataclass

from .checks import DEVICE, Limit, Pattern, check_section


@dataclass(frozen=True)
class EvaluateConfig:
    """Scoring a trained model on whole 3D subjects (`ctslice evaluate`) and predicting new CTs (`ctslice predict`).
    They read the cache (or a CT) as the [loader] section says: batch size, workers, pinned memory, prefetch."""

    surface_tolerance_mm: float = 2.0
    """Tolerance of the normalised surface Dice in mm (Nikolov et al. 2021): the share of both surfaces lying within
    this distance of the other. TotalSegmentator reports it beside Dice."""

    detection_min_ml: float = 0.1
    """A structure counts as present in a reference or prediction from this volume on (ml), so a few stray voxels
    are not a detection."""

    detection_dice: float = 0.1
    """A structure present in both reference and prediction is a hit from this Dice on, else a miss."""

    device: str = "auto"
    """'auto' (the GPU when there is one, else the CPU), 'cpu', 'cuda' or 'cuda:N'."""

    worst_subjects: int = 3
    """Overlay figures of this many worst subjects (lowest mean Dice)."""

    inference_memory_gib: float = 4.0
    """Memory one inference batch may take on the device (activations and class scores): evaluate and predict run
    [loader] batch_size slices at once, or fewer when those would not fit (at 512 x 512 with 118 classes about
    0.5 GiB a slice: 8). Raise it on a large GPU, with a larger --batch-size."""
    tta: str = "none"
    """Test-time augmentation: 'none', or a comma-separated list of 'shift' (the slice moved by tta_shift_px up,
    down, left and right: safe for any anatomy) and 'flip-lr' (mirrored left-right with left/right pairs swapped:
    only for models trained with left-right mirroring). Probabilities are averaged over the views
    (`model/tta.py`)."""

    tta_shift_px: int = 4
    """How far 'shift' moves the slice, in pixels."""

    SECTION = "evaluate"
    LIMITS = {
        "surface_tolerance_mm": Limit(0, 1000, unit="mm"),
        "detection_min_ml": Limit(0, 1e6, unit="ml"),
        "detection_dice": Limit(0, 1),
        "device": DEVICE,
        "worst_subjects": Limit(0, 1000),
        "inference_memory_gib": Limit(0.001, 1e5, unit="GiB"),
        "tta": Pattern(r"none|(shift|flip-lr)(,(shift|flip-lr))*", "none, or a comma-separated list of shift and "
                                                                     "flip-lr"),
        "tta_shift_px": Limit(1, 64),
    }
    MOVED = {"batch_size": "loader", "workers": "loader"}
    """Settings that were once here: a file that still sets one is told its new section."""

    def validate(self) -> None:
        """Every field against its rule in LIMITS; raises ConfigError."""
        check_section(self)

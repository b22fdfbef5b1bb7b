"""Section of the one typed configuration: evaluation and prediction ([evaluate])."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import CtsliceError


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



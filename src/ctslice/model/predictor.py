"""What evaluate and predict run: one checkpoint's model, or several averaged (`ensemble.py`), with test-time
augmentation when asked (`tta.py`).

    model, checkpoints = load_predictor(["runs/f0/checkpoint_best.pth", "runs/f1/checkpoint_best.pth"], device,
                                        tta=("shift",), shift_px=4)
    checkpoints[0].intensity, checkpoints[0].preprocess    # the settings (all checkpoints agree on them)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from .checkpoint import Checkpoint
from .ensemble import load_ensemble
from .tta import with_tta


def air_value(intensity: dict) -> float:
    """The clip's lower end (air) in the model's normalised input: what enters at the border of a shifted slice."""
    return (intensity["clip"][0] - intensity["shift"]) / intensity["scale"]


def load_predictor(paths: Sequence[Path | str], device: torch.device | str = "cpu", tta: Sequence[str] = (),
                   shift_px: int = 4) -> tuple[torch.nn.Module, list[Checkpoint]]:
    """The model to run (eval mode, on `device`) and the checkpoints it came from; without an ensemble or TTA,
    the plain model of the one checkpoint."""
    model, checkpoints = load_ensemble(paths, device)
    first = checkpoints[0]
    return with_tta(model, tta, first.labels, air_value(first.intensity), shift_px), checkpoints

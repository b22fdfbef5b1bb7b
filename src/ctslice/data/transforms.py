"""Batch transforms that run on the training device, after the int16 batch has been copied there.

    images = apply_intensity(batch["image"].to(device, non_blocking=True), intensity)  # int16 HU -> model input
"""

from __future__ import annotations

import torch


def apply_intensity(images: torch.Tensor, intensity: dict) -> torch.Tensor:
    """int16 HU -> float32 model input by a resolved intensity scheme (what checkpoints store, so evaluation and
    prediction transform exactly as training did): clip to intensity["clip"] = [low, high], then
    (x - shift) / scale. A fixed window [lo, hi] is {"clip": [lo, hi], "shift": lo, "scale": hi - lo}; nnU-Net's
    CT normalisation is {"clip": [p0.5, p99.5], "shift": mean, "scale": std} of the foreground."""
    lo, hi = (float(v) for v in intensity["clip"])
    scale = float(intensity["scale"])
    if not hi > lo or not scale > 0:
        raise ValueError(f"intensity needs clip (low, high) with high > low and scale > 0, got {intensity}")
    return (images.float().clamp_(lo, hi) - float(intensity["shift"])) / scale

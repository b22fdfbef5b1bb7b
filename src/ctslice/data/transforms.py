"""Batch transforms that run on the training device, after the int16 batch has been copied there.

    images = normalize_batch(batch["image"].to(device, non_blocking=True), (cfg.hu_min, cfg.hu_max))
"""

from __future__ import annotations

import torch


def normalize_batch(images: torch.Tensor, window: tuple[float, float] = (-1024.0, 3071.0)) -> torch.Tensor:
    """int16 HU (any shape) -> float32 in [0, 1]: clip to the window, then scale linearly.

    Pass the cache's own clip (manifest settings hu_min/hu_max) or a narrower soft-tissue window; the default is
    the preprocessing default, the 12-bit CT range.
    """
    lo, hi = float(window[0]), float(window[1])
    if not hi > lo:
        raise ValueError(f"window must be (low, high) with high > low, got {window}")
    return (images.float().clamp_(lo, hi) - lo) / (hi - lo)


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

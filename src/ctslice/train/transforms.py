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

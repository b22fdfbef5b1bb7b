"""Intensity augmentations of nnU-Net's 2D set: pure functions of (images, per-slice parameters), batched, on the
images' device. They never see the labels, which stay as they are. Statistics (mean, std, range) are per slice over
its k context channels, which are one image. Which slices a transform applies to is decided by the caller
(`augment.py`), which keeps the others unchanged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .augment_spatial import gaussian_smooth

_DIMS = (1, 2, 3)


def _per_slice(x: torch.Tensor) -> torch.Tensor:
    """(B,) values as (B, 1, 1, 1), to broadcast over a slice."""
    return x[:, None, None, None]


def gaussian_noise(images: torch.Tensor, variance: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """images + noise (standard normal, like images) * sqrt(variance[b])."""
    return images + noise * _per_slice(variance.sqrt())


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor, max_sigma: float) -> torch.Tensor:
    """Each slice blurred with its own sigma (px, at most max_sigma), borders replicated."""
    return gaussian_smooth(images, sigma, math.ceil(3 * max_sigma), "replicate")


def multiply(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Multiplicative brightness: images * factor[b]."""
    return images * _per_slice(factor)


def contrast(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """nnU-Net's contrast: (x - mean) * factor + mean per slice, clipped to the slice's range before."""
    mean = images.mean(_DIMS, keepdim=True)
    low, high = images.amin(_DIMS, keepdim=True), images.amax(_DIMS, keepdim=True)
    return torch.minimum(torch.maximum((images - mean) * _per_slice(factor) + mean, low), high)


def low_resolution(images: torch.Tensor, zoom: torch.Tensor) -> torch.Tensor:
    """Simulated low resolution: each slice downsampled to round(zoom[b] * size) px by nearest neighbour (as
    F.interpolate's nearest picks: pixel floor(j / zoom)), then upsampled bicubically back to its size. Slices of
    different zooms in one batch: the coarse slice lies in the top-left corner of a full-size canvas whose rest
    repeats its last row and column (what bicubic's border padding would read)."""
    b, _, h, w = images.shape

    def axis(n: int) -> tuple[torch.Tensor, torch.Tensor]:  # (B, n) grid coordinates of both resamplings
        size = (zoom * n).round().clamp(min=1)[:, None]
        ratio = size / n
        j = torch.arange(n, device=images.device, dtype=torch.float32)[None]
        source = torch.floor(torch.minimum(j, size - 1) / ratio).clamp(max=n - 1)  # nearest, coarse pixel j
        coarse = (j + 0.5) * ratio - 0.5  # where output pixel j lies on the coarse slice
        return (2 * source + 1) / n - 1, (2 * coarse + 1) / n - 1

    (down_x, up_x), (down_y, up_y) = axis(w), axis(h)

    def grid(gx: torch.Tensor, gy: torch.Tensor) -> torch.Tensor:
        return torch.stack([gx[:, None, :].expand(b, h, w), gy[:, :, None].expand(b, h, w)], -1)

    canvas = F.grid_sample(images, grid(down_x, down_y), mode="nearest", align_corners=False)
    return F.grid_sample(canvas, grid(up_x, up_y), mode="bicubic", padding_mode="border", align_corners=False)


def gamma(images: torch.Tensor, exponent: torch.Tensor, invert: bool = False) -> torch.Tensor:
    """nnU-Net's gamma transform with retained statistics: per slice, the intensities scaled to [0, 1] over its
    range, raised to exponent[b], scaled back, then shifted and scaled to the slice's mean and std before. With
    `invert`, the same on -x (a gamma that brightens where the other darkens)."""
    x = -images if invert else images
    mean, std = x.mean(_DIMS, keepdim=True), x.std(_DIMS, keepdim=True)
    low = x.amin(_DIMS, keepdim=True)
    span = x.amax(_DIMS, keepdim=True) - low
    x = ((x - low) / (span + 1e-7)).pow(_per_slice(exponent)) * span + low
    x = (x - x.mean(_DIMS, keepdim=True)) / (x.std(_DIMS, keepdim=True) + 1e-8) * std + mean
    return -x if invert else x

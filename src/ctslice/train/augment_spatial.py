"""Spatial augmentations: pure functions of (batch, per-slice parameters), batched, on the batch's device.

Images (B, k, H, W) are resampled bilinearly, labels (B, H, W) by nearest neighbour from the same grid (or flipped
with them), so labels move with the image and no label value is ever invented. Parameters are drawn elsewhere
(`augment.py`); a slice whose parameters are the identity's comes out as it went in.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def affine_matrices(zoom: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """(B, 2, 3) affine_grid matrices of a zoom (> 1 enlarges the content) and an in-plane rotation (radians)."""
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    zero = torch.zeros_like(cos)
    return torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)


def gaussian_kernels(sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """(B, 2 * radius + 1) normalised 1D Gaussian kernels; sigma 0 gives the identity kernel."""
    x = torch.arange(-radius, radius + 1, device=sigma.device, dtype=torch.float32)
    s = sigma.float()[:, None]
    weights = torch.where(s > 0, torch.exp(-x**2 / (2 * s.clamp(min=1e-6) ** 2)), (x == 0).float())
    return weights / weights.sum(1, keepdim=True)


def gaussian_smooth(x: torch.Tensor, sigma: torch.Tensor, radius: int, padding: str) -> torch.Tensor:
    """Each slice of x (B, c, H, W) smoothed by its own separable Gaussian of `sigma[b]` px (one grouped
    convolution per axis, no loop over slices); `padding` 'replicate' or 'constant' (zeros) at the borders."""
    b, c, h, w = x.shape
    kernels = gaussian_kernels(sigma, radius).repeat_interleave(c, 0)  # (B * c, K)
    flat = x.reshape(1, b * c, h, w).float()
    flat = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode=padding), kernels[:, None, None, :], groups=b * c)
    flat = F.conv2d(F.pad(flat, (0, 0, radius, radius), mode=padding), kernels[:, None, :, None], groups=b * c)
    return flat.reshape(b, c, h, w).to(x.dtype)


def elastic_offsets(noise: torch.Tensor, alpha: torch.Tensor, sigma: float) -> torch.Tensor:
    """(B, H, W, 2) grid offsets (normalised units) of an elastic deformation: `noise` (B, 2, H, W) uniform in
    [-1, 1], smoothed by a Gaussian of `sigma` px, times `alpha[b]`, in px (batchgenerators' definition); alpha 0
    gives no offset."""
    b, _, h, w = noise.shape
    radius = math.ceil(3 * sigma)
    field = gaussian_smooth(noise, noise.new_full((b,), sigma), radius, "constant") * alpha[:, None, None, None]
    scale = torch.tensor([2 / w, 2 / h], device=noise.device, dtype=field.dtype)
    return field.permute(0, 2, 3, 1) * scale  # (dx, dy), as grid_sample orders them


def resample(images: torch.Tensor, labels: torch.Tensor, grid: torch.Tensor, fill: float
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Images bilinear, labels nearest, from one sampling grid (B, H, W, 2); `fill` enters at the image borders,
    background at the labels'."""
    images = F.grid_sample(images - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill
    labels = F.grid_sample(labels.unsqueeze(1).float(), grid, mode="nearest", padding_mode="zeros",
                           align_corners=False).squeeze(1).to(labels.dtype)
    return images, labels


def mirror(images: torch.Tensor, labels: torch.Tensor, flip_w: torch.Tensor, flip_h: torch.Tensor
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Slices flipped left-right where flip_w (B,) and up-down where flip_h, labels with them."""
    for flip, axis in ((flip_w, -1), (flip_h, -2)):
        images = torch.where(flip[:, None, None, None], images.flip(axis), images)
        labels = torch.where(flip[:, None, None], labels.flip(axis), labels)
    return images, labels

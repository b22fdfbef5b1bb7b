"""Augmentation of a normalised training batch, on the training device (never on validation batches).

    images, labels = augment_batch(images, labels, cfg.augment, fill=background_value, generator=g)

Per slice, with probability `probability`: a random zoom in [1 - scale, 1 + scale] and an in-plane rotation in
[-rotate_degrees, rotate_degrees] (one affine grid, bilinear for the image, nearest for the labels, so no label is
invented); then, for every slice, contrast (x * c) and brightness (x + b) jitter. No left-right flips: many
structures are left/right pairs and a flip would swap their meaning.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..config import AugmentConfig


def random_affines(n: int, cfg: AugmentConfig, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """(n, 2, 3) affine_grid matrices: identity where the slice is not transformed."""
    u = torch.rand((n, 3), generator=generator, device=device)
    apply = u[:, 0] < cfg.probability
    zoom = torch.where(apply, 1 + cfg.scale * (2 * u[:, 1] - 1), torch.ones_like(u[:, 1]))
    angle = torch.where(apply, math.radians(cfg.rotate_degrees) * (2 * u[:, 2] - 1), torch.zeros_like(u[:, 2]))
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom  # sampling grid: zoom > 1 enlarges the content
    zero = torch.zeros_like(cos)
    return torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)


def augment_batch(images: torch.Tensor, labels: torch.Tensor, cfg: AugmentConfig, *, fill: float,
                  generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """images float (B, k, H, W) after intensity normalisation, labels integer (B, H, W). `fill` is the value
    that enters at the borders (air after normalisation); labels fill with background."""
    if not cfg.enabled:
        return images, labels
    n = images.shape[0]
    theta = random_affines(n, cfg, generator, images.device)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    images = F.grid_sample(images - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill
    labels = F.grid_sample(labels.unsqueeze(1).float(), grid, mode="nearest", padding_mode="zeros",
                           align_corners=False).squeeze(1).to(labels.dtype)
    u = torch.rand((n, 2, 1, 1, 1), generator=generator, device=images.device).unbind(1)
    contrast, brightness = 1 + cfg.contrast * (2 * u[0] - 1), cfg.brightness * (2 * u[1] - 1)
    return images * contrast + brightness, labels

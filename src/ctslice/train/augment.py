"""Augmentation of a normalised training batch, on the training device (never on validation batches).

    images, labels = augment_batch(images, labels, cfg.augment, fill=background_value, generator=g)

Per slice, each transform with its own probability ([augment]), in nnU-Net's order: the spatial one (zoom,
rotation and the optional elastic deformation in one resampling: bilinear for the image, nearest for the labels,
so no label is invented), the seed's brightness/contrast jitter (every slice), then nnU-Net's intensity set
(Gaussian noise, Gaussian blur, multiplicative brightness, contrast, simulated low resolution, gamma on inverted
and on plain intensities), and mirroring last (off by default: left/right pairs). The transforms are pure functions
of (batch, parameters) in `augment_spatial.py` and `augment_intensity.py`; here the parameters are drawn, all from
`generator` (saved in checkpoints, so a resumed run draws the same), batched with no per-slice loop and no
synchronisation with the device. A transform whose probability is 0 draws nothing and is skipped; a slice not
chosen keeps its values exactly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..config import AugmentConfig
from . import augment_intensity as intensity
from .augment_spatial import affine_matrices, elastic_offsets, mirror, resample


def random_affines(n: int, cfg: AugmentConfig, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """(n, 2, 3) affine_grid matrices: identity where the slice is not transformed."""
    u = torch.rand((n, 3), generator=generator, device=device)
    apply = u[:, 0] < cfg.probability
    zoom = torch.where(apply, 1 + cfg.scale * (2 * u[:, 1] - 1), torch.ones_like(u[:, 1]))
    angle = torch.where(apply, math.radians(cfg.rotate_degrees) * (2 * u[:, 2] - 1), torch.zeros_like(u[:, 2]))
    return affine_matrices(zoom, angle)


class Draw:
    """Per-slice random parameters for a batch of n slices, from one generator on the batch's device."""

    def __init__(self, n: int, generator: torch.Generator, device: torch.device):
        self.n, self.generator, self.device = n, generator, device

    def uniform(self, low: float, high: float, shape: tuple[int, ...] = ()) -> torch.Tensor:
        u = torch.rand((self.n, *shape), generator=self.generator, device=self.device)
        return low + (high - low) * u

    def chance(self, p: float) -> torch.Tensor:
        """(n,) bool: which slices a transform of probability p applies to."""
        return self.uniform(0, 1) < p


def _where(chosen: torch.Tensor, changed: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    return torch.where(chosen[:, None, None, None], changed, images)


def augment_spatial(images: torch.Tensor, labels: torch.Tensor, cfg: AugmentConfig, fill: float, draw: Draw
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    if cfg.probability == 0 and cfg.elastic_probability == 0:
        return images, labels
    grid = F.affine_grid(random_affines(draw.n, cfg, draw.generator, draw.device), list(images.shape),
                         align_corners=False)
    if cfg.elastic_probability > 0:
        alpha = torch.where(draw.chance(cfg.elastic_probability), draw.uniform(0, cfg.elastic_alpha), 0.0)
        grid = grid + elastic_offsets(draw.uniform(-1, 1, (2, *images.shape[2:])), alpha, cfg.elastic_sigma)
    return resample(images, labels, grid, fill)


def augment_intensity(images: torch.Tensor, cfg: AugmentConfig, draw: Draw) -> torch.Tensor:
    if cfg.noise_probability > 0:
        chosen, variance = draw.chance(cfg.noise_probability), draw.uniform(0, cfg.noise_variance)
        noise = torch.randn(images.shape, generator=draw.generator, device=draw.device)
        images = _where(chosen, intensity.gaussian_noise(images, variance, noise), images)
    if cfg.blur_probability > 0:
        chosen, sigma = draw.chance(cfg.blur_probability), draw.uniform(cfg.blur_sigma / 2, cfg.blur_sigma)
        images = _where(chosen, intensity.gaussian_blur(images, sigma, cfg.blur_sigma), images)
    if cfg.multiply_probability > 0:
        chosen, factor = draw.chance(cfg.multiply_probability), draw.uniform(1 - cfg.multiply_range,
                                                                              1 + cfg.multiply_range)
        images = _where(chosen, intensity.multiply(images, factor), images)
    if cfg.contrast_probability > 0:
        chosen, factor = draw.chance(cfg.contrast_probability), draw.uniform(1 - cfg.contrast_range,
                                                                              1 + cfg.contrast_range)
        images = _where(chosen, intensity.contrast(images, factor), images)
    if cfg.lowres_probability > 0:
        chosen, zoom = draw.chance(cfg.lowres_probability), draw.uniform(cfg.lowres_zoom, 1)
        images = _where(chosen, intensity.low_resolution(images, zoom), images)
    for p, invert in ((cfg.gamma_invert_probability, True), (cfg.gamma_probability, False)):
        if p > 0:
            chosen, below = draw.chance(p), draw.chance(0.5)  # nnU-Net: half the draws darken, half brighten
            exponent = torch.where(below, draw.uniform(cfg.gamma_low, 1), draw.uniform(1, cfg.gamma_high))
            images = _where(chosen, intensity.gamma(images, exponent, invert), images)
    return images


def augment_batch(images: torch.Tensor, labels: torch.Tensor, cfg: AugmentConfig, *, fill: float,
                  generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """images float (B, k, H, W) after intensity normalisation, labels integer (B, H, W). `fill` is the value
    that enters at the borders (air after normalisation); labels fill with background."""
    if not cfg.enabled:
        return images, labels
    draw = Draw(images.shape[0], generator, images.device)
    images, labels = augment_spatial(images, labels, cfg, fill, draw)
    u = torch.rand((draw.n, 2, 1, 1, 1), generator=generator, device=images.device).unbind(1)
    contrast, brightness = 1 + cfg.contrast * (2 * u[0] - 1), cfg.brightness * (2 * u[1] - 1)
    images = augment_intensity(images * contrast + brightness, cfg, draw)
    if cfg.mirror_probability > 0:
        images, labels = mirror(images, labels, draw.chance(cfg.mirror_probability),
                                draw.chance(cfg.mirror_probability))
    return images, labels

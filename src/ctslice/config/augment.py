"""The [augment] section of the one typed configuration: which transforms a training batch gets, and how often."""

from __future__ import annotations

from dataclasses import dataclass

from .checks import Limit, check_section


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation of training batches, on the training device, batched; never applied to validation. Each
    transform has its probability per slice; the defaults are the seed's recipe (scale/rotation, brightness and
    contrast jitter) and `configs/nnunet2d.toml` sets nnU-Net's 2D set. Mirroring is off by default: many
    structures are left/right pairs, and a flipped slice shows the left kidney where the right one belongs while
    its label still says "left"."""

    enabled: bool = True
    """Augment training batches at all."""

    probability: float = 0.5
    """Chance that a slice gets the spatial transform (scale and rotation)."""

    scale: float = 0.1
    """Zoom factor drawn uniformly from [1 - scale, 1 + scale]."""

    rotate_degrees: float = 10.0
    """Rotation drawn uniformly from [-rotate_degrees, rotate_degrees] (in-plane)."""

    elastic_probability: float = 0.0
    """Chance of an elastic deformation (nnU-Net's 2D set leaves it off), in the same resampling as the zoom and
    rotation."""

    elastic_alpha: float = 900.0
    """Elastic: strength, drawn from [0, elastic_alpha]; the displacement (px) is uniform noise in [-1, 1] smoothed
    by a Gaussian of elastic_sigma px, times it (batchgenerators' definition and nnU-Net's range)."""

    elastic_sigma: float = 10.0
    """Elastic: smoothness of the displacement field in px (nnU-Net draws 9-13)."""

    mirror_probability: float = 0.0
    """Chance of a flip along each in-plane axis (left-right and anterior-posterior, each drawn alone). Off: a
    flip swaps the sides of left/right pairs whose labels say which side they are on."""

    brightness: float = 0.1
    """Additive intensity shift drawn from [-brightness, brightness] (in normalised units), every slice (the
    seed's jitter; nnU-Net's set has none)."""

    contrast: float = 0.1
    """Multiplicative intensity factor drawn from [1 - contrast, 1 + contrast], every slice (the seed's jitter;
    nnU-Net's equivalent is multiply_probability)."""

    noise_probability: float = 0.0
    """Chance of additive Gaussian noise (nnU-Net: 0.1)."""

    noise_variance: float = 0.1
    """Noise: variance drawn from [0, noise_variance] (normalised units; nnU-Net's 0.1)."""

    blur_probability: float = 0.0
    """Chance of a Gaussian blur (nnU-Net: 0.2)."""

    blur_sigma: float = 1.0
    """Blur: sigma in px drawn from [blur_sigma / 2, blur_sigma] (nnU-Net's 0.5-1)."""

    multiply_probability: float = 0.0
    """Chance of a multiplicative brightness factor (nnU-Net: 0.15)."""

    multiply_range: float = 0.25
    """Multiplicative brightness: factor from [1 - multiply_range, 1 + multiply_range] (nnU-Net's 0.75-1.25)."""

    contrast_probability: float = 0.0
    """Chance of nnU-Net's contrast transform (0.15 there): (x - mean) * factor + mean, clipped to the slice's
    range before."""

    contrast_range: float = 0.25
    """Contrast: factor from [1 - contrast_range, 1 + contrast_range] (nnU-Net's 0.75-1.25)."""

    lowres_probability: float = 0.0
    """Chance of simulated low resolution (nnU-Net: 0.25, per channel 0.5): nearest downsampling by a zoom, then
    bicubic upsampling back."""

    lowres_zoom: float = 0.5
    """Low resolution: zoom drawn from [lowres_zoom, 1] (nnU-Net's 0.5)."""

    gamma_probability: float = 0.0
    """Chance of a gamma transform of the slice's intensity range, mean and std kept (nnU-Net: 0.3)."""

    gamma_invert_probability: float = 0.0
    """Chance of the same on the inverted intensities (nnU-Net: 0.1)."""

    gamma_low: float = 0.7
    """Gamma: half the draws from [gamma_low, 1], half from [1, gamma_high] (nnU-Net's 0.7 and 1.5)."""

    gamma_high: float = 1.5
    """Gamma: the upper end (see gamma_low)."""

    SECTION = "augment"
    LIMITS = {
        "probability": Limit(0, 1),
        "scale": Limit(0, 1, high_open=True),
        "rotate_degrees": Limit(0, 180),
        "elastic_probability": Limit(0, 1),
        "elastic_alpha": Limit(0, 1e5),
        "elastic_sigma": Limit(1, 100),
        "mirror_probability": Limit(0, 1),
        "brightness": Limit(0, 10),  # normalised intensities span about [0, 1] ('window') or a few units ('ct')
        "contrast": Limit(0, 1, high_open=True),
        "noise_probability": Limit(0, 1),
        "noise_variance": Limit(0, 10),
        "blur_probability": Limit(0, 1),
        "blur_sigma": Limit(0, 10, low_open=True),
        "multiply_probability": Limit(0, 1),
        "multiply_range": Limit(0, 1, high_open=True),
        "contrast_probability": Limit(0, 1),
        "contrast_range": Limit(0, 1, high_open=True),
        "lowres_probability": Limit(0, 1),
        "lowres_zoom": Limit(0.1, 1),
        "gamma_probability": Limit(0, 1),
        "gamma_invert_probability": Limit(0, 1),
        "gamma_low": Limit(0.1, 1),
        "gamma_high": Limit(1, 10),
    }

    def validate(self) -> None:
        """Every field against its rule in LIMITS, then the rules between fields; raises ConfigError."""
        check_section(self)

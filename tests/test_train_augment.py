"""The augmentation set (nnU-Net's 2D one): what each transform must preserve. Spatial ones move the labels with
the image and never interpolate new label values; intensity ones leave the labels alone; probability 0 is the
identity; the draws come from the generator only (a resumed run repeats them)."""

import dataclasses
import math

import pytest
import torch

from ctslice.config import AugmentConfig
from ctslice.train import augment_intensity as intensity
from ctslice.train.augment import augment_batch
from ctslice.train.augment_spatial import affine_matrices, elastic_offsets, mirror, resample

OFF = AugmentConfig(probability=0.0, brightness=0.0, contrast=0.0)  # every transform off
INTENSITY = ("noise", "blur", "multiply", "contrast", "lowres", "gamma", "gamma_invert")


def blobs(n: int = 4, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels 0, 3, 5 in nested squares and an image that is the labels' value plus a little texture."""
    labels = torch.zeros(n, size, size, dtype=torch.long)
    labels[:, 6:26, 8:22], labels[:, 10:14, 12:18] = 3, 5
    images = labels[:, None].float() + 0.1 * torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(1))
    return images, labels


def test_every_probability_zero_is_the_identity():
    images, labels = blobs()
    out_images, out_labels = augment_batch(images, labels, OFF, fill=0.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out_images, images) and torch.equal(out_labels, labels)


@pytest.mark.parametrize("name", INTENSITY)
def test_each_intensity_transform_changes_the_image_and_leaves_the_labels(name):
    images, labels = blobs()
    cfg = dataclasses.replace(OFF, **{f"{name}_probability": 1.0})
    out_images, out_labels = augment_batch(images, labels, cfg, fill=0.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out_labels, labels) and not torch.allclose(out_images, images)
    assert out_images.shape == images.shape and torch.isfinite(out_images).all()


def test_intensity_transforms_with_identity_parameters_give_the_input_back():
    images, _ = blobs()
    ones, zeros = torch.ones(4), torch.zeros(4)
    assert torch.equal(intensity.gaussian_noise(images, zeros, torch.randn_like(images)), images)
    assert torch.equal(intensity.gaussian_blur(images, zeros, 1.0), images)
    assert torch.equal(intensity.multiply(images, ones), images)
    assert torch.allclose(intensity.contrast(images, ones), images, atol=1e-6)
    assert torch.allclose(intensity.low_resolution(images, ones), images, atol=1e-5)
    for invert in (False, True):
        assert torch.allclose(intensity.gamma(images, ones, invert), images, atol=1e-5)


def test_intensity_transforms_keep_what_nnunet_keeps():
    images, _ = blobs()
    dims = (1, 2, 3)
    factor = torch.tensor([0.75, 1.25, 0.9, 1.1])
    out = intensity.contrast(images, factor)  # mean kept where nothing clips, range never exceeded
    assert (out.amin(dims) >= images.amin(dims) - 1e-6).all() and (out.amax(dims) <= images.amax(dims) + 1e-6).all()
    for invert in (False, True):  # gamma keeps each slice's mean and std
        out = intensity.gamma(images, torch.tensor([0.7, 1.5, 0.8, 1.3]), invert)
        assert torch.allclose(out.mean(dims), images.mean(dims), atol=1e-4)
        assert torch.allclose(out.std(dims), images.std(dims), rtol=1e-3)
        assert not torch.allclose(out, images, atol=1e-3)
    flat = torch.full((2, 1, 16, 16), 0.3)
    assert torch.allclose(intensity.gaussian_blur(flat, torch.tensor([0.5, 1.0]), 1.0), flat)
    assert torch.allclose(intensity.low_resolution(flat, torch.tensor([0.5, 0.7])), flat)
    checker = (torch.arange(16)[:, None] + torch.arange(16)[None]).remainder(2).float().expand(1, 1, 16, 16)
    coarse = intensity.low_resolution(checker, torch.tensor([0.5]))  # every other pixel: one colour left
    assert torch.allclose(coarse, coarse.flatten()[0].expand_as(coarse))
    noisy = intensity.gaussian_noise(torch.zeros(1, 1, 256, 256), torch.tensor([0.09]),
                                     torch.randn(1, 1, 256, 256, generator=torch.Generator().manual_seed(0)))
    assert noisy.std().item() == pytest.approx(0.3, rel=0.05)


def test_a_quarter_turn_moves_labels_with_the_image_exactly():
    images, labels = blobs(n=1)
    grid = torch.nn.functional.affine_grid(affine_matrices(torch.ones(1), torch.tensor([math.pi / 2])),
                                           [1, 1, 32, 32], align_corners=False)
    out_images, out_labels = resample(images, labels, grid, fill=0.0)
    turned = torch.rot90(labels, 1, (1, 2))
    assert torch.equal(out_labels, turned) or torch.equal(out_labels, torch.rot90(labels, -1, (1, 2)))
    assert torch.allclose(out_images[:, 0].round(), out_labels.float())


@pytest.mark.parametrize("transform", ["affine", "elastic"])
def test_spatial_transforms_invent_no_label_and_keep_labels_under_their_image(transform):
    images, labels = blobs()
    cfg = (dataclasses.replace(OFF, probability=1.0, scale=0.3, rotate_degrees=45) if transform == "affine" else
           dataclasses.replace(OFF, elastic_probability=1.0, elastic_alpha=600.0, elastic_sigma=4.0))
    out_images, out_labels = augment_batch(images, labels, cfg, fill=0.0, generator=torch.Generator().manual_seed(0))
    assert set(out_labels.unique().tolist()) <= {0, 3, 5} and not torch.equal(out_labels, labels)
    # the image is the label's value plus < 0.1 of texture: bilinear and nearest agree away from the edges (which
    # are a fair share of 32 px squares), and far better than with the labels left where they were
    moved = out_images[:, 0].round().long()
    assert (moved == out_labels).float().mean() > 0.9 > (moved == labels).float().mean()


def test_elastic_offsets_are_zero_where_alpha_is_zero():
    noise = torch.rand(2, 2, 16, 16) * 2 - 1
    offsets = elastic_offsets(noise, torch.tensor([0.0, 50.0]), sigma=3.0)
    assert offsets.shape == (2, 16, 16, 2) and torch.equal(offsets[0], torch.zeros(16, 16, 2))
    assert offsets[1].abs().max() > 0


def test_mirror_flips_image_and_labels_together_and_only_where_chosen():
    images, labels = blobs(n=2)
    out_images, out_labels = mirror(images, labels, torch.tensor([True, False]), torch.tensor([False, True]))
    assert torch.equal(out_images[0], images[0].flip(-1)) and torch.equal(out_labels[0], labels[0].flip(-1))
    assert torch.equal(out_images[1], images[1].flip(-2)) and torch.equal(out_labels[1], labels[1].flip(-2))


def test_the_draws_come_from_the_generator_alone():
    images, labels = blobs()
    cfg = dataclasses.replace(OFF, probability=0.5, mirror_probability=0.5, elastic_probability=0.5,
                              **{f"{name}_probability": 0.5 for name in INTENSITY})
    g = torch.Generator().manual_seed(3)
    state = g.get_state()
    first = augment_batch(images, labels, cfg, fill=0.0, generator=g)
    torch.manual_seed(99)  # the global RNG plays no part
    g.set_state(state)
    second = augment_batch(images, labels, cfg, fill=0.0, generator=g)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])

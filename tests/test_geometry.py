"""Geometry records: cached slices map back to the original voxel grid."""

import nibabel as nib
import numpy as np
import pytest

from geometry_reference import labels_to_original

from ctslice.imaging.geometry import Geometry, image_to_cache, labels_to_cache, plan_geometry

RAS = np.diag([2.0, 2.5, 3.0, 1.0])
LPS = np.array([[-2.0, 0, 0, 30], [0, -2.5, 0, 40], [0, 0, 3.0, -5], [0, 0, 0, 1]])
ODD = np.array([[0, 0, 3.0, 0], [2.0, 0, 0, 0], [0, 2.5, 0, 0], [0, 0, 0, 1]])  # slices not on the last axis


def _labels(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 5, size=shape).astype(np.uint8)


@pytest.mark.parametrize("affine", [RAS, LPS, ODD], ids=["RAS", "LPS", "permuted"])
def test_native_spacing_round_trips_exactly(affine):
    shape = (11, 9, 7)
    labels = _labels(shape)
    geometry = plan_geometry(shape, affine, spacing=None, size=16)
    cached, cropped = labels_to_cache(labels, geometry)
    assert cropped == 0 and cached.shape == geometry.shape
    assert np.array_equal(labels_to_original(cached, geometry), labels)
    restored = Geometry.from_json(geometry.to_json())
    assert restored == geometry


@pytest.mark.parametrize("affine", [RAS, LPS, ODD], ids=["RAS", "LPS", "permuted"])
def test_cache_affine_points_at_the_same_world_position(affine):
    shape = (11, 9, 7)
    geometry = plan_geometry(shape, affine, spacing=1.25, size=32)
    index = np.array([2, 5, 7, 1.0])
    original_index = np.asarray(geometry.cache_to_original) @ index
    assert np.allclose(geometry.cache_affine @ index, affine @ original_index)
    assert nib.aff2axcodes(geometry.cache_affine[:, [2, 1, 0, 3]]) == ("L", "P", "S")


def test_cache_orientation_is_lps_with_slices_first():
    shape = (4, 6, 3)
    volume = np.zeros(shape, np.uint8)
    volume[0, 5, 2] = 1  # RAS+: i = 0 is the patient's leftmost column; most anterior; top slice
    geometry = plan_geometry(shape, RAS, None, size=6)
    cached, _ = labels_to_cache(volume, geometry)
    z, row, col = np.argwhere(cached)[0]
    assert z == 2                       # slices inferior -> superior
    assert row == geometry.offset[0]    # anterior is the first row
    assert col == geometry.offset[1] + 3  # columns grow towards the patient's left: leftmost is last


def test_resampling_never_invents_labels_and_counts_crop():
    shape = (40, 40, 3)
    labels = np.zeros(shape, np.uint8)
    labels[5:35, 5:35] = 3
    labels[10:20, 10:20] = 7
    geometry = plan_geometry(shape, RAS, spacing=1.0, size=48)  # 2 mm -> 1 mm: 80x100 px, cropped to 48
    cached, cropped = labels_to_cache(labels, geometry)
    assert set(np.unique(cached)) <= {0, 3, 7}
    assert cropped > 0
    full, none_cropped = labels_to_cache(labels, plan_geometry(shape, RAS, spacing=1.0, size=128))
    assert none_cropped == 0
    assert int(np.count_nonzero(full)) - int(np.count_nonzero(cached)) == cropped


def test_image_padding_uses_fill_and_keeps_hu():
    shape = (4, 4, 2)
    image = np.full(shape, 40, np.int16)
    geometry = plan_geometry(shape, RAS, None, size=8)
    cached = image_to_cache(image, geometry, fill=-1024)
    assert cached.dtype == np.int16
    assert (cached == 40).sum() == 4 * 4 * 2 and (cached == -1024).sum() == 2 * 64 - 32

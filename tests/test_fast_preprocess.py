"""The faster preprocessing gives the same arrays: masks merged in their boxes, slices resampled on threads, masks
read on threads in label order."""

from __future__ import annotations

import numpy as np
import pytest

from ctslice.imaging.geometry import image_to_cache, labels_to_cache, plan_geometry
from ctslice.preprocess.labels import is_binary, mask_extent, merge_mask
from ctslice.preprocess.threads import map_in_order

ANISOTROPIC = np.diag([0.8, 1.1, 2.5, 1.0])


def _masks(shape, n, seed=0):
    """n overlapping random-box masks, Fortran-ordered uint8 as nibabel reads them."""
    rng = np.random.default_rng(seed)
    masks = []
    for _ in range(n):
        m = np.zeros(shape, np.uint8, order="F")
        lo = [int(rng.integers(0, s - 1)) for s in shape]
        hi = [int(rng.integers(a + 1, s + 1)) for a, s in zip(lo, shape)]
        m[tuple(slice(a, b) for a, b in zip(lo, hi))] = rng.random([b - a for a, b in zip(lo, hi)]) < 0.7
        masks.append(m)
    return masks


@pytest.mark.parametrize("shape", [(16, 12, 7), (13, 9, 5), (122, 101, 6)])  # rows of 8, odd and 2-byte words
def test_merging_in_each_masks_box_equals_merging_the_whole_volume(shape):
    masks = _masks(shape, 12) + [np.zeros(shape, np.uint8, order="F")]
    whole, boxed = np.zeros(shape, np.uint8, order="F"), np.zeros(shape, np.uint8, order="F")
    seen_whole, seen_boxed = np.zeros(shape, bool, order="F"), np.zeros(shape, bool, order="F")
    overlap_whole = overlap_boxed = 0
    for index, mask in enumerate(masks, start=1):
        overlap_whole += merge_mask(whole, mask, index, seen_whole)
        binary, box = mask_extent(mask)
        assert binary
        if box is None:
            assert not mask.any()
            continue
        assert np.count_nonzero(mask[box]) == np.count_nonzero(mask)
        overlap_boxed += merge_mask(boxed[box], mask[box], index, seen_boxed[box])
    assert overlap_whole > 0 and overlap_boxed == overlap_whole
    assert np.array_equal(boxed, whole)


@pytest.mark.parametrize("dtype, value", [(np.uint8, 2), (np.uint8, 255), (np.int8, -1), (np.uint8, 128)])
@pytest.mark.parametrize("where", [(0, 0, 0), (15, 11, 6), (9, 3, 2)])
def test_mask_extent_finds_any_value_other_than_0_and_1(dtype, value, where):
    mask = np.zeros((16, 12, 7), dtype, order="F")
    mask[2:5, 3:6, 1:3] = 1
    mask[where] = value
    assert mask_extent(mask)[0] is False and not is_binary(mask)


def test_other_arrays_fall_back_to_the_whole_volume():
    mask = np.zeros((6, 5, 4), np.uint8)  # C order
    mask[1, 1, 1] = 1
    assert mask_extent(mask) == (True, (slice(None),) * 3)
    assert mask_extent(np.asfortranarray(mask.astype(np.int16) * 2))[0] is False


def test_resampling_on_threads_equals_the_float_volume_rounded_once():
    rng = np.random.default_rng(1)
    ct = rng.integers(-1024, 2000, (37, 29, 9), dtype=np.int16)
    labels = rng.integers(0, 5, (37, 29, 9)).astype(np.uint8)
    geometry = plan_geometry(ct.shape, ANISOTROPIC, spacing=1.5, size=32)
    one = image_to_cache(ct, geometry, fill=-1024)
    assert np.array_equal(image_to_cache(ct, geometry, fill=-1024, threads=3), one)
    as_float = image_to_cache(ct.astype(np.float32), geometry, fill=-1024)  # the float path: one rint at the end
    assert np.array_equal(as_float, one)
    assert all(np.array_equal(a, b) for a, b in zip(labels_to_cache(labels, geometry, threads=3),
                                                    labels_to_cache(labels, geometry)))


def test_map_in_order_keeps_order_and_raises_the_first_failure_in_order():
    assert list(map_in_order(lambda x: x * x, range(50), threads=3)) == [x * x for x in range(50)]

    def fail_on_odd_after_4(x):
        if x > 4 and x % 2:
            raise ValueError(f"item {x}")
        return x

    results = []
    with pytest.raises(ValueError, match="item 5"):
        for r in map_in_order(fail_on_odd_after_4, range(20), threads=4):
            results.append(r)
    assert results == [0, 1, 2, 3, 4]

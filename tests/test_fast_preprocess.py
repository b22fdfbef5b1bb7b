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


def _scipy_slice(plane, geometry, order, dtype):
    """The earlier resampling of one reoriented slice, by scipy itself: the reference the separable code matches."""
    from scipy import ndimage

    from ctslice.imaging.geometry import _scale

    out = np.empty(tuple(geometry.resampled_shape), np.float32 if order else dtype)
    ndimage.affine_transform(plane, np.array([_scale(geometry, 1), _scale(geometry, 2)]),
                             output_shape=out.shape, output=out, order=order, mode="nearest")
    return np.rint(out) if out.dtype.kind == "f" else out


@pytest.mark.parametrize("seed", range(6))
def test_separable_resampling_equals_scipy_affine_transform_bit_for_bit(seed):
    """Shapes, spacings (one in-plane axis at the target spacing, upsampling, downsampling), flips, crops and pads:
    every cached voxel equals scipy's order-1 (CT) or order-0 (labels) value, and the crop count its count."""
    from ctslice.imaging.geometry import _reorient, _window

    rng = np.random.default_rng(seed)
    shape = tuple(int(n) for n in rng.integers(3, 40, 3))
    affine = np.diag([*rng.uniform(0.4, 3.5, 3), 1.0]) * np.r_[rng.choice([-1, 1], 3), 1]
    if seed % 2:
        affine[0, 0] = 1.5 * np.sign(affine[0, 0])  # this axis needs no interpolation
    geometry = plan_geometry(shape, affine, spacing=1.5, size=int(rng.integers(8, 40)))
    ct = rng.integers(-1024, 3072, shape).astype(np.int16)
    labels = (rng.integers(0, 4, shape) * (rng.random(shape) < 0.5)).astype(np.uint8)
    image, (cached, cropped) = image_to_cache(ct, geometry, fill=-1024), labels_to_cache(labels, geometry)
    src, dst = _window(tuple(geometry.resampled_shape), geometry)
    expected_cropped = 0
    for z, (ct_plane, label_plane) in enumerate(zip(_reorient(ct, affine), _reorient(labels, affine))):
        assert np.array_equal(image[z][dst], _scipy_slice(ct_plane, geometry, 1, np.int16)[src].astype(np.int16))
        label_slice = _scipy_slice(label_plane, geometry, 0, np.uint8)
        assert np.array_equal(cached[z][dst], label_slice[src])
        expected_cropped += np.count_nonzero(label_slice) - np.count_nonzero(label_slice[src])
    assert cropped == expected_cropped


def test_a_subject_gets_its_workers_share_of_the_cores(monkeypatch):
    from ctslice.preprocess import threads

    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: set(range(4)))
    assert threads.subject_threads(0, None, in_process=True) == 4
    assert [threads.subject_threads(w, None, in_process=False) for w in (1, 2, 3, 4)] == [4, 2, 1, 1]
    assert threads.subject_threads(1, "tcp://elsewhere:8786", in_process=False) == 1  # its cores are unknown


@pytest.mark.parametrize("background", [False, True])
def test_alongside_gives_the_result_or_raises_its_error(background):
    from ctslice.preprocess.threads import alongside

    with alongside(lambda: 42, background) as get:
        assert get() == 42

    def fail():
        raise ValueError("ct")

    with pytest.raises(ValueError, match="ct"):
        with alongside(fail, background) as get:
            get()


def test_threads_beyond_two_only_when_their_waiting_masks_fit(monkeypatch, tmp_path):
    import nibabel as nib

    from ctslice.imaging import memory

    nib.save(nib.Nifti1Image(np.zeros((10, 10, 10), np.int16), np.eye(4)), tmp_path / "ct.nii.gz")
    img = nib.load(tmp_path / "ct.nii.gz")  # a header on disk, as preprocessing sees it
    need = memory.estimate_bytes(img)
    monkeypatch.setattr(memory, "available_bytes", lambda: need + 3 * 1000)  # room for 3 more masks of 1000 voxels
    assert [memory.affordable_threads(img, w) for w in (1, 2, 4, 8)] == [1, 2, 4, 5]
    monkeypatch.setattr(memory, "available_bytes", lambda: need // 2)
    assert memory.affordable_threads(img, 8) == 2


@pytest.mark.parametrize("layout", ["slices", "shards"])
def test_the_preprocess_benchmark_builds_the_same_arrays_every_way_and_prints_the_ratios(tmp_path, layout):
    """`ctslice bench preprocess` on tiny demo subjects: in-process, 1 and 2 dask workers all cache the same arrays
    (one digest), in either layout, and the floor, the ratios against the targets and the write table are printed."""
    import json

    from typer.testing import CliRunner

    from ctslice.cli import app

    out = tmp_path / "result.json"
    result = CliRunner().invoke(app, ["bench", "preprocess", "--out", str(tmp_path), "--subjects", "2", "--size", "32",
                                      "--min-slices", "4", "--max-slices", "5", "--layout", layout, "--json", str(out)])
    assert result.exit_code == 0, result.output
    r = json.loads(out.read_text())
    assert r["settings"]["layout"] == layout
    assert isinstance(r["arrays_digest"], str)  # a list would mean the runs cached different arrays
    assert r["in_process_vs_floor"] > 0 and r["speedup_1_to_2_workers"] > 0
    text = " ".join(result.output.split())
    assert "in-process vs floor" in text and "speed-up 1 -> 2 workers" in text and "direct, shards" in text

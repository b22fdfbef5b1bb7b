"""The label volumes on which the surface Dice is checked against MONAI: built here, once, for the test
(test_surface_dice_reference.py) and for the script that computed the expected values with MONAI
(reference_monai_nsd.py), so that both score the same arrays.

Each case: (pred, ref, spacing, tolerance_mm), integer label volumes; classes 1.. are scored.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SUBJECT = Path(__file__).resolve().parents[2] / "shared" / "data" / "totalseg_example" / \
    "s0001_expected_multilabel.nii.gz"


def _box(shape, lo, hi, label=1, into=None):
    v = np.zeros(shape, np.uint8) if into is None else into
    v[tuple(slice(a, b) for a, b in zip(lo, hi))] = label
    return v


def _ball(shape, centre, radii, label=1, into=None):
    v = np.zeros(shape, np.uint8) if into is None else into
    grid = np.indices(shape, dtype=np.float64)
    inside = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) <= 1.0
    v[inside] = label
    return v


def shift(volume: np.ndarray, by: int, axis: int) -> np.ndarray:
    """The volume moved `by` voxels along `axis`, background (not wrap-around) coming in."""
    out = np.zeros_like(volume)
    src = [slice(None)] * volume.ndim
    dst = [slice(None)] * volume.ndim
    src[axis] = slice(0, volume.shape[axis] - by) if by >= 0 else slice(-by, None)
    dst[axis] = slice(by, None) if by >= 0 else slice(0, volume.shape[axis] + by)
    out[tuple(dst)] = volume[tuple(src)]
    return out


def constructed() -> dict[str, tuple[np.ndarray, np.ndarray, tuple[float, float, float], float]]:
    cases = {}
    # a 4x4x4 cube and the same cube one voxel further along axis 0, 2 mm slices
    cube = _box((10, 10, 10), (2, 2, 2), (6, 6, 6))
    for tol in (0.5, 1.5, 2.0):
        cases[f"shifted_cube_tol{tol}"] = (shift(cube, 1, 0), cube, (2.0, 1.0, 1.0), tol)
    # anisotropic spacing: an ellipsoid against a smaller, offset one, and a second class that is a slab
    ref = _ball((14, 24, 20), (6.5, 11.0, 9.5), (4.5, 8.0, 7.0))
    pred = _ball((14, 24, 20), (7.0, 12.0, 9.0), (4.0, 8.5, 6.0))
    _box(ref.shape, (1, 2, 2), (3, 20, 6), label=2, into=ref)
    _box(ref.shape, (1, 3, 2), (4, 20, 5), label=2, into=pred)
    cases["anisotropic"] = (pred, ref, (3.0, 0.8, 1.2), 2.0)
    # touching the volume's border on every axis (the outside counts as background)
    ref = _box((8, 9, 10), (0, 0, 0), (5, 9, 4))
    pred = _box((8, 9, 10), (0, 1, 0), (8, 9, 3))
    cases["border_touching"] = (pred, ref, (1.5, 1.0, 2.5), 2.0)
    # two single voxels 5 mm apart in z (adjacent slices of 5 mm): the surfels share a corner layer
    a = _box((5, 5, 5), (1, 2, 2), (2, 3, 3))
    b = _box((5, 5, 5), (2, 2, 2), (3, 3, 3))
    cases["single_voxels_5mm_apart_in_z"] = (a, b, (5.0, 1.0, 1.0), 2.0)
    # empty: class 1 only in the reference, class 2 only in the prediction, class 3 in neither
    ref = _box((6, 6, 6), (1, 1, 1), (3, 3, 3))
    pred = _box((6, 6, 6), (3, 3, 3), (5, 5, 5), label=2)
    cases["empty"] = (pred, ref, (1.0, 1.0, 1.0), 2.0)
    return cases


def demo_like() -> tuple[np.ndarray, np.ndarray, tuple[float, float, float], float]:
    """A demo subject (ctslice.synthetic, seed 0, subject 0) merged as preprocessing merges it (later index
    wins), against a prediction that is the reference moved one voxel along axis 1 with class 1 grown by one
    voxel: the spacing of the demo (4-6 mm in-plane, 2.5-5 mm slices) at a 4 mm tolerance."""
    from scipy import ndimage

    from ctslice.synthetic import DemoSpec, synthetic_subject

    spec = DemoSpec()
    _, masks, affine = synthetic_subject(spec, 0)
    ref = np.zeros(next(iter(masks.values())).shape, np.uint8)
    for index, name in enumerate(spec.structures, start=1):
        ref[masks[name] > 0] = index
    pred = shift(ref, 1, 1)
    pred[ndimage.binary_dilation(pred == 1) & (pred == 0)] = 1
    spacing = tuple(float(v) for v in np.linalg.norm(affine[:3, :3], axis=0))
    return pred, ref, spacing, 4.0


def real_subject() -> tuple[np.ndarray, np.ndarray, tuple[float, float, float], float]:
    """The shared TotalSegmentator subject's merged labels (3 mm), against themselves moved one voxel along
    axis 0, at 2 mm."""
    import nibabel as nib

    image = nib.load(SUBJECT)
    ref = np.asarray(image.dataobj).astype(np.uint8)
    spacing = tuple(float(v) for v in image.header.get_zooms()[:3])
    return shift(ref, 1, 0), ref, spacing, 2.0

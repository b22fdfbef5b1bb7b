"""The normalised surface Dice equals the field's reference implementation on the same arrays.

Expected values: MONAI 1.6.1 (torch 2.13.0+cpu, numpy 2.4.6), `monai.metrics.compute_surface_dice(onehot(pred),
onehot(ref), class_thresholds=[tolerance] * C, include_background=True, spacing=list(spacing),
use_subvoxels=True)`, which follows DeepMind's surface-distance (`compute_surface_distances` +
`compute_surface_dice_at_tolerance`; that package does not import under NumPy 2). Computed by
tests/reference_monai_nsd.py on the arrays of tests/surface_dice_cases.py, printed rounded to 6 decimals; MONAI
returns float32, so agreement is to 1e-6. Classes not listed are in neither volume: NaN in MONAI and here.
The voxel-based variant that ctslice used before differs from these by up to 0.2 (shifted cube: 0.643 at 0.5 mm).
"""

import math

import numpy as np
import pytest

import surface_dice_cases as cases
from ctslice.evaluate.metrics import score_subject
from ctslice.evaluate.surfels import neighbour_codes, surfel_area_table

MONAI = {
    "shifted_cube_tol0.5": {1: 0.759389},
    "shifted_cube_tol1.5": {1: 0.817867},
    "shifted_cube_tol2.0": {1: 1.0},
    "anisotropic": {1: 0.932194, 2: 0.881122},
    "border_touching": {1: 0.734856},
    "single_voxels_5mm_apart_in_z": {1: 0.5},
    "empty": {1: 0.0, 2: 0.0},
}
DEMO_LIKE = {1: 0.822815, 2: 0.916007, 3: 0.90209, 4: 0.921281, 5: 0.956723, 6: 0.944545, 7: 0.866981,
             8: 0.709656, 9: 0.766444, 10: 0.954408, 11: 0.97915, 12: 0.879052, 13: 0.968085, 14: 0.941526}
REAL_SUBJECT = {
    1: 0.633259, 2: 0.734241, 3: 0.69517, 4: 0.712779, 5: 0.77495, 6: 0.733748, 7: 0.781052, 8: 0.83059,
    9: 0.797606, 10: 0.603855, 11: 0.782169, 14: 0.801572, 18: 0.889649, 19: 0.709412, 20: 0.73473, 30: 0.765693,
    31: 0.737368, 32: 0.734795, 33: 0.795035, 52: 0.628653, 63: 0.702706, 64: 0.840447, 79: 0.707274,
    86: 0.806099, 87: 0.81545, 88: 0.504936, 89: 0.505162, 98: 0.656344, 99: 0.589073, 100: 0.546701,
    101: 0.663889, 102: 0.824873, 103: 0.88058, 110: 0.666175, 111: 0.659709, 112: 0.595802, 113: 0.611334,
    114: 0.824533, 115: 0.925258, 117: 0.783298,
}


def _check(pred, ref, spacing, tol, expected, num_classes):
    got = score_subject(pred, ref, spacing, num_classes, tol)["surface_dice"]
    for c in range(1, num_classes):
        if c in expected:
            assert got[c] == pytest.approx(expected[c], abs=1e-6), f"class {c}"
        else:
            assert math.isnan(got[c]), f"class {c} is in neither volume"


@pytest.mark.parametrize("name", sorted(MONAI))
def test_constructed_cases_equal_monai_subvoxels(name):
    pred, ref, spacing, tol = cases.constructed()[name]
    _check(pred, ref, spacing, tol, MONAI[name], num_classes=4)


def test_demo_like_subject_equals_monai_subvoxels():
    pred, ref, spacing, tol = cases.demo_like()
    _check(pred, ref, spacing, tol, DEMO_LIKE, num_classes=len(DEMO_LIKE) + 1)


def test_real_subject_shifted_one_voxel_equals_monai_subvoxels():
    if not cases.SUBJECT.exists():
        pytest.skip(f"shared reference data not found at {cases.SUBJECT}")
    pred, ref, spacing, tol = cases.real_subject()
    _check(pred, ref, spacing, tol, REAL_SUBJECT, num_classes=118)


def test_surfel_areas_of_a_box_add_up_to_its_surface():
    # A 3x4x5 box at spacing (2, 1, 3): the surfels of its flat faces and edges tile the box's faces, so the
    # areas add up to a little less than 2(ab + bc + ca) - the marching-cubes surface cuts the corners and edges.
    mask = np.zeros((5, 6, 7), bool)
    mask[1:4, 1:5, 1:6] = True
    spacing = (2.0, 1.0, 3.0)
    codes = neighbour_codes(mask)
    assert codes.shape == (6, 7, 8) and codes[0, 0, 0] == 0 and codes[2, 2, 2] == 255
    area = surfel_area_table(spacing)[codes].sum()
    a, b, c = 3 * 2.0, 4 * 1.0, 5 * 3.0
    assert 0.8 * 2 * (a * b + b * c + c * a) < area < 2 * (a * b + b * c + c * a)
    table = surfel_area_table(spacing)
    assert table[0] == 0 and table[255] == 0 and np.allclose(table[1:128], table[254:127:-1])

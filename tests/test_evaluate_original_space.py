"""Predictions back on the original grid: an oracle prediction (the cached labels as probabilities) of the real
reference subject maps back to TotalSegmentator's own merged label file voxel for voxel at native spacing."""

import nibabel as nib
import numpy as np
import pytest
import torch

from conftest import REAL_SUBJECT, require_real_subject
from ctslice.cache.manifest import read_manifest
from ctslice.cache.reader import CacheReader
from ctslice.config import PreprocessConfig
from ctslice.evaluate import original_space
from ctslice.evaluate.original_space import PlaneMapper, to_original
from ctslice.imaging.geometry import Geometry, labels_to_cache, plan_geometry
from ctslice.preprocess.run import run_preprocess


def _oracle(cached: np.ndarray, num_classes: int) -> torch.Tensor:
    """One-hot probabilities (S, C, H, W) of a cached label volume."""
    return torch.nn.functional.one_hot(torch.from_numpy(cached).long(), num_classes).permute(0, 3, 1, 2).float()


def _map_back(cached: np.ndarray, geometry: Geometry, num_classes: int) -> np.ndarray:
    mapper = PlaneMapper(geometry)
    planes = torch.cat([mapper(p) for p in _oracle(cached, num_classes).split(4)]).numpy()
    return to_original(planes, geometry)


@pytest.mark.parametrize("interpolate", [False, True], ids=["indexing", "grid_sample"])
def test_oracle_prediction_of_the_real_subject_maps_back_voxel_for_voxel(tmp_path, monkeypatch, interpolate):
    root = require_real_subject()
    run_preprocess(root, tmp_path / "c", PreprocessConfig(spacing=None, size=128, workers=0))
    record = read_manifest(tmp_path / "c").subjects["s0001"]
    reader = CacheReader(tmp_path / "c")
    cached = np.stack([reader.read_label(0, z) for z in range(record.slices)])
    if interpolate:  # the bilinear path must be exact too where the sampling points are the pixel centres
        monkeypatch.setattr(original_space, "_integral_inside", lambda coords, n: False)
    back = _map_back(cached, Geometry.from_json(record.geometry), 118)
    expected = np.asanyarray(nib.load(REAL_SUBJECT / "s0001_expected_multilabel.nii.gz").dataobj)
    assert back.shape == expected.shape and np.array_equal(back, expected)


def test_resampled_and_cropped_oracle_comes_back_close_and_outside_the_slice_is_background():
    shape = (40, 30, 6)
    labels = np.zeros(shape, np.uint8)
    labels[1:39, 6:24, 1:5] = 1
    labels[14:22, 10:16, 2:4] = 2
    affine = np.diag([1.2, 1.2, 3.0, 1.0])
    # 1.2 -> 1.5 mm: 32 columns x 24 rows, centre-cropped to 24 columns (canonical x from 5 to 33.75 voxels)
    geometry = plan_geometry(shape, affine, spacing=1.5, size=24)
    cached, cropped = labels_to_cache(labels, geometry)
    assert cropped > 0
    back = _map_back(cached, geometry, 3)
    assert back.shape == shape
    assert not back[:5].any() and not back[36:].any()  # outside the cached field of view (x is flipped: RAS -> LPS)
    field = np.zeros(shape, bool)
    field[6:34] = True
    for label in (1, 2):
        ref, pred = (labels == label) & field, (back == label) & field
        assert 2 * np.sum(ref & pred) / (ref.sum() + pred.sum()) > 0.9

"""Label maps and mask merging, including the real TotalSegmentator reference subject."""

import json

import nibabel as nib
import numpy as np
import pytest

from conftest import REAL_SUBJECT, SHARED_DATA, require_real_subject
from ctslice.preprocess.labels import (
    build_label_map, is_binary, merge_mask, official_total_classes, slice_statistics,
)
from ctslice.preprocess.sources import discover


def test_official_classes_match_the_reference_list():
    path = SHARED_DATA / "total_v2_classes.json"
    if not path.exists():
        pytest.skip("shared reference data not available")
    reference = json.loads(path.read_text())
    assert official_total_classes() == tuple(reference[str(i)] for i in range(1, 118))


def test_full_official_set_keeps_official_indices():
    names = list(reversed(official_total_classes()))
    label_map = build_label_map(names)
    assert label_map[1] == "spleen" and label_map[5] == "liver" and label_map[117] == "costal_cartilages"
    assert len(label_map) == 118 and label_map[0] == "background"


def test_unknown_names_follow_known_ones_alphabetically():
    assert build_label_map(["zeta", "liver", "alpha", "spleen"]) == {
        0: "background", 1: "spleen", 2: "liver", 3: "alpha", 4: "zeta"}


def test_later_index_wins_and_overlap_is_counted():
    label = np.zeros((4, 4), np.uint8)
    a = np.zeros((4, 4), np.uint8); a[:2, :3] = 1
    b = np.zeros((4, 4), np.uint8); b[1:3, 1:] = 1
    assert merge_mask(label, a, 1) == 0
    assert merge_mask(label, b, 2) == 2  # (1,1) and (1,2) were spleen's
    assert label[1, 1] == 2 and label[0, 0] == 1 and label[3, 3] == 0


def test_is_binary():
    assert is_binary(np.array([0, 1, 1], np.uint8))
    assert not is_binary(np.array([0, 2], np.uint8))
    assert not is_binary(np.array([0, -1], np.int16))
    assert not is_binary(np.array([0.0, 0.5]))
    assert is_binary(np.array([0.0, 1.0]))


def test_slice_statistics():
    label = np.zeros((2, 3, 3), np.uint8)
    label[1, 0, 0] = 2
    label[1, 1, 1] = 2
    fg, present, voxels = slice_statistics(label, 3)
    assert fg.tolist() == [0, 2] and voxels.tolist() == [16, 0, 2]
    assert present.tolist() == [[True, False, False], [True, False, True]]


def test_real_subject_merges_to_the_reference_voxel_for_voxel():
    """Merging the 117 real masks in official order reproduces TotalSegmentator's own merged file."""
    root = require_real_subject()
    ds = discover(root)
    assert ds.label_map == {0: "background", **dict(enumerate(official_total_classes(), 1))}
    masks = dict(ds.subjects[0].masks)
    ct = nib.load(root / "s0001" / "ct.nii.gz")
    label = np.zeros(ct.shape, np.uint8)
    for index, name in list(ds.label_map.items())[1:]:
        merge_mask(label, np.asanyarray(nib.load(root / masks[name]).dataobj), index)
    expected = np.asanyarray(nib.load(REAL_SUBJECT / "s0001_expected_multilabel.nii.gz").dataobj)
    assert np.array_equal(label, expected)


def test_a_voxel_in_three_masks_is_one_overlapping_voxel():
    label, overlapped = np.zeros((3, 3), np.uint8), np.zeros((3, 3), bool)
    box = np.zeros((3, 3), np.uint8); box[:2, :2] = 1
    assert [merge_mask(label, box, i, overlapped) for i in (1, 2, 3)] == [0, 4, 0]
    assert overlapped.sum() == 4 and (label[:2, :2] == 3).all()

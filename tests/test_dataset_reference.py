"""open_reference: what `evaluate --original-space` scores against. The label volume of a subject is the one
preprocessing cached (same merge, same label-map indices, nnU-Net values mapped), and a subject that cannot be
scored says why: changed files, or not found."""

import nibabel as nib
import numpy as np

from builders import SHAPE, box_mask, nnunet_dataset, ts_subject
from ctslice.cache.manifest import read_manifest
from ctslice.cache.reader import CacheReader
from ctslice.config import PreprocessConfig
from ctslice.imaging.geometry import Geometry, labels_to_cache
from ctslice.preprocess.reference import open_reference
from ctslice.preprocess.run import run_preprocess

NATIVE = PreprocessConfig(spacing=None, size=16, workers=0)  # the tiny volumes fit whole: nothing cropped


def _cached_labels(cache, sid):
    reader = CacheReader(cache)
    s = reader.subjects.index(sid)
    return np.stack([reader.read_label(s, z) for z in range(int(reader.shapes[s, 0]))])


def _as_cached(labels, cache, sid):
    geometry = Geometry.from_json(read_manifest(cache).subjects[sid].geometry)
    cached, cropped = labels_to_cache(labels, geometry)
    assert cropped == 0
    return cached


def test_totalsegmentator_reference_is_the_merge_preprocessing_cached(tmp_path):
    for i, sid in enumerate(("s1", "s2")):
        ts_subject(tmp_path / "d", sid, seed=i)  # liver and spleen boxes overlap at x = 5
    run_preprocess(tmp_path / "d", tmp_path / "c", NATIVE)
    manifest = read_manifest(tmp_path / "c")
    reference = open_reference(tmp_path / "d", manifest)
    index = {name: i for i, name in manifest.labels.items()}
    for sid in ("s1", "s2"):
        assert reference.skip_reason(sid) is None
        labels, ct = reference.labels(sid)
        assert labels.shape == SHAPE and ct.shape == SHAPE
        assert np.array_equal(ct.affine, nib.load(tmp_path / "d" / sid / "ct.nii.gz").affine)
        assert labels[5, 5, 2] == max(index["liver"], index["spleen"])  # overlap: the later index wins
        assert labels[2, 2, 1] == index["liver"] and labels[8, 8, 4] == index["spleen"] and labels[0, 0, 0] == 0
        assert np.array_equal(_as_cached(labels, tmp_path / "c", sid), _cached_labels(tmp_path / "c", sid))


def test_nnunet_reference_maps_the_datasets_values_to_label_map_indices(tmp_path):
    label = box_mask((12, 12, 6), (1, 1, 1), (5, 5, 5)) * 3
    label[6:10, 6:10, 1:5] = 7
    nnunet_dataset(tmp_path / "nn", {"case0": label, "case1": label}, {"background": 0, "liver": 3, "spleen": 7})
    run_preprocess(tmp_path / "nn", tmp_path / "c", NATIVE)
    manifest = read_manifest(tmp_path / "c")
    assert manifest.labels == {0: "background", 1: "liver", 2: "spleen"}
    reference = open_reference(tmp_path / "nn", manifest)
    labels, ct = reference.labels("case0")
    assert ct.shape == label.shape
    expected = np.select([label == 3, label == 7], [1, 2], 0)
    assert np.array_equal(labels, expected) and set(np.unique(labels)) == {0, 1, 2}
    assert np.array_equal(_as_cached(labels, tmp_path / "c", "case0"), _cached_labels(tmp_path / "c", "case0"))


def test_a_subject_that_cannot_be_scored_says_why(tmp_path):
    for i, sid in enumerate(("changed", "no_ct", "gone", "same")):
        ts_subject(tmp_path / "d", sid, seed=i)
    run_preprocess(tmp_path / "d", tmp_path / "c", NATIVE)
    ct = tmp_path / "d" / "changed" / "ct.nii.gz"
    img = nib.load(ct)
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj) + 1, img.affine, img.header), ct)
    (tmp_path / "d" / "no_ct" / "ct.nii.gz").unlink()  # a discovery problem: "modified" to preprocessing
    for mask in (tmp_path / "d" / "gone").rglob("*.nii.gz"):
        mask.unlink()
    (tmp_path / "d" / "gone" / "segmentations").rmdir()
    (tmp_path / "d" / "gone").rmdir()
    reference = open_reference(tmp_path / "d", read_manifest(tmp_path / "c"))
    assert reference.skip_reason("changed") == "source files changed since the cache was built"
    assert reference.skip_reason("no_ct") == "not found in the dataset folder"
    assert reference.skip_reason("gone") == "not found in the dataset folder"
    assert reference.skip_reason("same") is None

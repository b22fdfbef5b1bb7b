"""Tests for the synthetic TotalSegmentator-style demo dataset generator."""

from __future__ import annotations

import csv
import itertools
import json
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from conftest import SHARED_DATA
from ctslice.synthetic import (
    DEFAULT_STRUCTURES,
    DemoSpec,
    generate_demo_dataset,
    missing_structures,
    subject_id,
    synthetic_subject,
)

SMALL = DemoSpec(subjects=4, size=24, slices=(6, 12), missing_mask_fraction=0.0)
CLASSES = SHARED_DATA / "total_v2_classes.json"


def _load(path: Path) -> nib.Nifti1Image:
    return nib.load(str(path))


def test_default_structures_are_official_names() -> None:
    assert 10 <= len(DEFAULT_STRUCTURES) <= 16
    assert len(set(DEFAULT_STRUCTURES)) == len(DEFAULT_STRUCTURES)
    if not CLASSES.exists():
        pytest.skip(f"shared reference data not found at {CLASSES}")
    official = set(json.loads(CLASSES.read_text()).values())
    assert set(DEFAULT_STRUCTURES) <= official


def test_layout_and_subject_ids(tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    ids = generate_demo_dataset(tmp_path, SMALL, progress=lambda i, n: calls.append((i, n)))
    assert ids == ["demo0000", "demo0001", "demo0002", "demo0003"]
    assert ids == [subject_id(i) for i in range(4)]
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]
    for sid in ids:
        assert (tmp_path / sid / "ct.nii.gz").is_file()
        names = sorted(p.name for p in (tmp_path / sid / "segmentations").iterdir())
        assert names == sorted(f"{s}.nii.gz" for s in SMALL.structures)  # no temp files left
    assert sorted(p.name for p in tmp_path.iterdir()) == [*ids, "meta.csv"]


def test_deterministic_files_and_arrays(tmp_path: Path) -> None:
    spec = DemoSpec(subjects=3, size=20, slices=(5, 8), missing_mask_fraction=0.3, seed=7)
    generate_demo_dataset(tmp_path / "a", spec)
    generate_demo_dataset(tmp_path / "b", spec)
    files_a, files_b = (
        sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())
        for root in (tmp_path / "a", tmp_path / "b")
    )
    assert files_a == files_b
    for rel in files_a:  # byte-identical, including gzip and NIfTI headers
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    # The in-memory builder gives exactly what was written.
    ct, masks, affine = synthetic_subject(spec, 1)
    img = _load(tmp_path / "a" / "demo0001" / "ct.nii.gz")
    np.testing.assert_array_equal(np.asarray(img.dataobj), ct)
    np.testing.assert_allclose(img.affine, affine, atol=1e-5)
    for name, mask in masks.items():
        path = tmp_path / "a" / "demo0001" / "segmentations" / f"{name}.nii.gz"
        if path.exists():
            np.testing.assert_array_equal(np.asarray(_load(path).dataobj), mask)


def test_different_seed_differs() -> None:
    ct_a, masks_a, _ = synthetic_subject(SMALL, 0)
    ct_b, masks_b, _ = synthetic_subject(replace(SMALL, seed=1), 0)
    ct_c, _, _ = synthetic_subject(SMALL, 0)
    np.testing.assert_array_equal(ct_a, ct_c)
    assert ct_a.shape != ct_b.shape or not np.array_equal(ct_a, ct_b)
    assert any(not np.array_equal(m, masks_b[k]) for k, m in masks_a.items())


def test_ct_and_masks_agree_in_shape_dtype_affine_and_header(tmp_path: Path) -> None:
    ids = generate_demo_dataset(tmp_path, SMALL)
    for sid in ids:
        ct = _load(tmp_path / sid / "ct.nii.gz")
        assert ct.ndim == 3 and ct.shape[:2] == (24, 24) and 6 <= ct.shape[2] <= 12
        assert ct.get_data_dtype() == np.int16
        assert np.asarray(ct.dataobj).dtype == np.int16
        for img in [ct, *(_load(p) for p in (tmp_path / sid / "segmentations").glob("*.nii.gz"))]:
            assert img.shape == ct.shape
            np.testing.assert_array_equal(img.affine, ct.affine)
            assert int(img.header["sform_code"]) == 1 and int(img.header["qform_code"]) == 1
            assert img.header.get_xyzt_units()[0] == "mm"
            if img is not ct:
                assert img.get_data_dtype() == np.uint8


@pytest.mark.parametrize("spec", [SMALL, DemoSpec(subjects=3, size=8, slices=(2, 3))])
def test_masks_binary_and_non_empty(spec: DemoSpec) -> None:
    for index in range(spec.subjects):
        ct, masks, affine = synthetic_subject(spec, index)
        assert set(masks) == set(spec.structures)
        assert ct.dtype == np.int16 and affine.shape == (4, 4)
        for name, mask in masks.items():
            assert mask.dtype == np.uint8 and mask.shape == ct.shape
            assert set(np.unique(mask).tolist()) <= {0, 1}
            assert mask.sum() > 0, (index, name)


def test_some_structures_overlap() -> None:
    overlapping = set()
    for index in range(SMALL.subjects):
        _, masks, _ = synthetic_subject(SMALL, index)
        for (a, ma), (b, mb) in itertools.combinations(masks.items(), 2):
            if np.any(ma & mb):
                overlapping.add(frozenset((a, b)))
    assert len(overlapping) >= 2
    # At the default size the gallbladder partly overlaps the liver in every subject.
    for index in range(3):
        _, masks, _ = synthetic_subject(DemoSpec(), index)
        shared = int((masks["liver"] & masks["gallbladder"]).sum())
        assert 0 < shared < int(masks["gallbladder"].sum())


def test_no_missing_files_with_fraction_zero(tmp_path: Path) -> None:
    spec = DemoSpec(subjects=5, size=16, slices=(4, 6), missing_mask_fraction=0.0)
    for sid in generate_demo_dataset(tmp_path, spec):
        files = list((tmp_path / sid / "segmentations").glob("*.nii.gz"))
        assert len(files) == len(spec.structures)


def test_missing_files_with_fraction_half_never_all(tmp_path: Path) -> None:
    spec = DemoSpec(subjects=6, size=16, slices=(4, 6), missing_mask_fraction=0.5)
    generate_demo_dataset(tmp_path, replace(spec, missing_mask_fraction=0.0))
    ids = generate_demo_dataset(tmp_path, spec)  # rerun over the same folder: stale files go
    present = [
        {p.name.removesuffix(".nii.gz") for p in (tmp_path / sid / "segmentations").glob("*.nii.gz")}
        for sid in ids
    ]
    total = len(ids) * len(spec.structures)
    n_missing = total - sum(map(len, present))
    assert 0.2 * total < n_missing < 0.8 * total
    for index, names in enumerate(present):
        assert names and names == set(spec.structures) - missing_structures(spec, index)
    everything = DemoSpec(subjects=3, size=16, slices=(4, 6), missing_mask_fraction=1.0)
    for index in range(3):  # everything drawn missing: exactly one file survives
        assert len(missing_structures(everything, index)) == len(DEFAULT_STRUCTURES) - 1


def test_meta_csv(tmp_path: Path) -> None:
    spec = DemoSpec(subjects=10, size=12, slices=(3, 4), test_fraction=0.2)
    ids = generate_demo_dataset(tmp_path, spec)
    with open(tmp_path / "meta.csv", newline="") as f:
        reader = csv.DictReader(f, delimiter=";")
        assert reader.fieldnames == ["image_id", "age", "gender", "split"]
        rows = list(reader)
    assert [r["image_id"] for r in rows] == ids
    splits = [r["split"] for r in rows]
    assert set(splits) <= {"train", "val", "test"}
    assert splits.count("test") == 2 and splits.count("val") >= 1 and splits.count("train") >= 5
    assert all(0 < int(r["age"]) < 120 and r["gender"] in {"m", "f"} for r in rows)


def test_meta_csv_small_and_disabled(tmp_path: Path) -> None:
    generate_demo_dataset(tmp_path / "two", DemoSpec(subjects=2, size=12, slices=(3, 4)))
    with open(tmp_path / "two" / "meta.csv", newline="") as f:
        splits = sorted(r["split"] for r in csv.DictReader(f, delimiter=";"))
    assert splits == ["train", "val"]
    spec = DemoSpec(subjects=1, size=12, slices=(3, 4), meta_csv=False)
    generate_demo_dataset(tmp_path / "none", spec)
    assert not (tmp_path / "none" / "meta.csv").exists()


def test_slice_counts_spacings_and_orientations_vary() -> None:
    spec = DemoSpec(subjects=6, size=16, slices=(8, 40))
    affines, depths = [], []
    for index in range(spec.subjects):
        ct, _, affine = synthetic_subject(spec, index)
        affines.append(affine)
        depths.append(ct.shape[2])
    zooms = np.array([np.sqrt((a[:3, :3] ** 2).sum(axis=0)) for a in affines])
    assert len(set(depths)) > 1 and all(8 <= d <= 40 for d in depths)
    assert len(np.unique(zooms[:, 0].round(3))) > 1 and len(np.unique(zooms[:, 2].round(3))) > 1
    assert np.all((zooms[:, :2] >= 4.0) & (zooms[:, :2] <= 6.0))
    assert np.all((zooms[:, 2] >= 2.5) & (zooms[:, 2] <= 5.0))
    codes = [nib.aff2axcodes(a) for a in affines]
    assert ("R", "A", "S") in codes and any(c != ("R", "A", "S") for c in codes)


def test_anatomy_is_consistent_in_world_coordinates() -> None:
    """Whatever the stored orientation, liver is on the patient's right, spleen left."""
    spec = DemoSpec(subjects=3, size=32, slices=(10, 14))
    for index in range(spec.subjects):
        ct, masks, affine = synthetic_subject(spec, index)

        def world_centroid(mask: np.ndarray) -> np.ndarray:
            return nib.affines.apply_affine(affine, np.argwhere(mask).mean(axis=0))

        liver, spleen = world_centroid(masks["liver"]), world_centroid(masks["spleen"])
        spine = world_centroid(masks["vertebrae_L1"])
        assert liver[0] > spleen[0]  # RAS world: +x is the patient's right
        lung = world_centroid(masks["lung_upper_lobe_left"])
        bladder = world_centroid(masks["urinary_bladder"])
        assert lung[2] > bladder[2]  # lungs superior
        assert spine[1] < world_centroid(masks["aorta"])[1]  # spine posterior to the aorta


def test_hu_ranges_plausible() -> None:
    ct, masks, _ = synthetic_subject(DemoSpec(size=48, slices=(20, 20)), 0)
    assert ct.min() >= -1024 and ct.max() <= 3071
    assert abs(float(np.median(ct[:4, :4, :])) + 1000) < 30  # corner: air
    assert ct.max() > 200  # bone somewhere
    assert abs(float(np.median(ct[masks["lung_upper_lobe_left"] > 0])) + 850) < 50
    assert float(np.median(ct[masks["aorta"] > 0])) > 150  # contrast-enhanced blood
    assert float(np.median(ct[masks["vertebrae_L1"] > 0])) > 300  # bone
    assert 30 < float(np.median(ct[masks["liver"] > 0])) < 90
    body = ct[ct.shape[0] // 2, ct.shape[1] // 2, :]
    assert np.all(body > -300)  # the centre of the body is tissue, not air
    assert 5 < float(np.std(ct[:4, :4, :])) < 40  # Gaussian noise on the background


def test_unknown_official_structure_gets_a_shape() -> None:
    spec = DemoSpec(subjects=1, size=24, slices=(8, 8), structures=("sacrum", "esophagus", "liver"))
    _, masks, _ = synthetic_subject(spec, 0)
    assert all(m.sum() > 0 for m in masks.values())


@pytest.mark.parametrize(
    "kwargs",
    [{"slices": (10, 5)}, {"missing_mask_fraction": 1.5}, {"structures": ()},
     {"structures": ("liver", "liver")}, {"structures": ("../evil",)}, {"spacing_mm": (0.0, 1.0)}],
)  # fmt: skip
def test_invalid_spec_rejected(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        DemoSpec(**kwargs)

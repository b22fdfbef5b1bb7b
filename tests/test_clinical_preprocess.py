"""Preprocess reads DICOM series folders, NRRD and MetaImage in both dataset layouts, and caches them exactly as it
caches the same volumes stored as NIfTI."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from builders import box_mask, nnunet_dataset, ts_subject
from clinical_builders import OBLIQUE, write_dicom_series, write_itk
from conftest import require_real_subject
from ctslice.cache import store
from ctslice.cache.manifest import read_manifest
from ctslice.config import PreprocessConfig
from ctslice.preprocess.run import run_preprocess
from ctslice.preprocess.sources import discover

SETTINGS = PreprocessConfig(spacing=None, size=16, workers=0)


def cached(cache) -> dict[str, tuple[np.ndarray, np.ndarray, list]]:
    manifest = read_manifest(cache)
    out = {}
    for sid, record in manifest.subjects.items():
        group = store.open_subject(cache, record.path)
        out[sid] = (np.asarray(group["image"][...]), np.asarray(group["label"][...]),
                    record.geometry["original_affine"])
    return out


def assert_same_caches(a, b) -> None:
    ca, cb = cached(a), cached(b)
    assert ca.keys() == cb.keys()
    for sid in ca:
        np.testing.assert_array_equal(ca[sid][0], cb[sid][0], err_msg=f"{sid} image")
        np.testing.assert_array_equal(ca[sid][1], cb[sid][1], err_msg=f"{sid} label")
        np.testing.assert_allclose(ca[sid][2], cb[sid][2], atol=1e-5, err_msg=f"{sid} affine")


def to_itk(path, suffix: str) -> None:
    """Replace the NIfTI file `path` by the same volume as NRRD or MetaImage (`suffix`)."""
    img = nib.load(path)
    write_itk(path.with_name(path.name.replace(".nii.gz", suffix)), np.asarray(img.dataobj), img.affine)
    path.unlink()


def preprocess_both(tmp_path) -> None:
    """Preprocess tmp_path/nifti and tmp_path/mixed alike; their caches must be the same."""
    for root in ("nifti", "mixed"):
        assert run_preprocess(tmp_path / root, tmp_path / f"cache_{root}", SETTINGS).ok
    assert_same_caches(tmp_path / "cache_nifti", tmp_path / "cache_mixed")


def convert_subject(folder, ct_kind: str, mask_suffix: str) -> None:
    """Rewrite a TotalSegmentator subject (NIfTI) with its CT as `ct_kind` and its masks as `mask_suffix`."""
    img = nib.load(folder / "ct.nii.gz")
    data, affine = np.asarray(img.dataobj), img.affine
    (folder / "ct.nii.gz").unlink()
    if ct_kind == "dicom":
        write_dicom_series(folder / "ct", data, affine)
    else:
        write_itk(folder / f"ct{ct_kind}", data, affine)
    for mask in sorted((folder / "segmentations").glob("*.nii.gz")) if mask_suffix != ".nii.gz" else ():
        to_itk(mask, mask_suffix)


def test_totalsegmentator_layout_in_every_format(tmp_path):
    for root in (tmp_path / "nifti", tmp_path / "mixed"):
        for i, sid in enumerate(("s1", "s2", "s3")):
            ts_subject(root, sid, affine=OBLIQUE if i == 1 else np.diag([2.0, 2.0, 3.0, 1.0]), seed=i)
    convert_subject(tmp_path / "mixed" / "s1", "dicom", ".nrrd")
    convert_subject(tmp_path / "mixed" / "s2", ".mha", ".seg.nrrd")
    convert_subject(tmp_path / "mixed" / "s3", ".mhd", ".mhd")
    dataset = discover(tmp_path / "mixed")
    assert not dataset.problems
    s1, s3 = (next(s for s in dataset.subjects if s.id == sid) for sid in ("s1", "s3"))
    assert s1.image == "s1/ct" and len(s1.image_files) == 5 and "s1/ct" not in s1.files
    assert "s3/ct.raw" in s3.files and "s3/segmentations/liver.raw" in s3.files  # the .mhd data is fingerprinted
    preprocess_both(tmp_path)


def test_changed_dicom_slice_or_mhd_data_rebuilds_the_subject(tmp_path):
    from ctslice.preprocess.fingerprint import compare

    ts_subject(tmp_path / "data", "s1")
    ts_subject(tmp_path / "data", "s2", seed=1)
    convert_subject(tmp_path / "data" / "s1", "dicom", ".nii.gz")
    convert_subject(tmp_path / "data" / "s2", ".mhd", ".nii.gz")
    assert run_preprocess(tmp_path / "data", tmp_path / "cache", SETTINGS).ok
    slice_file = sorted((tmp_path / "data" / "s1" / "ct").iterdir())[0]
    slice_file.write_bytes(slice_file.read_bytes()[:-2] + b"\x01\x02")
    raw = tmp_path / "data" / "s2" / "ct.raw"
    raw.write_bytes(raw.read_bytes()[:-2] + b"\x01\x02")
    manifest = read_manifest(tmp_path / "cache")
    changes = compare(discover(tmp_path / "data"), manifest, manifest.settings.hash)
    assert changes.modified == ["s1", "s2"]


def test_nnunet_layout_in_nrrd_and_metaimage(tmp_path):
    labels = {"background": 0, "liver": 1, "spleen": 2}
    cases = {"c1": box_mask() + box_mask(lo=(6, 6, 1), hi=(9, 9, 3)) * 2, "c2": box_mask()}
    nnunet_dataset(tmp_path / "nifti", cases, labels)
    mixed = nnunet_dataset(tmp_path / "mixed", cases, labels)
    for sub, suffix in (("imagesTr", ".nrrd"), ("labelsTr", ".mha")):
        for f in sorted((mixed / sub).glob("*.nii.gz")):
            to_itk(f, suffix)
    preprocess_both(tmp_path)


def test_a_bad_series_fails_its_subject_alone(tmp_path):
    ts_subject(tmp_path / "data", "good")
    ts_subject(tmp_path / "data", "bad", seed=1)
    convert_subject(tmp_path / "data" / "bad", "dicom", ".nii.gz")
    paths = sorted((tmp_path / "data" / "bad" / "ct").iterdir())
    import pydicom

    ds = pydicom.dcmread(paths[0])
    ds.Modality = "MR"
    ds.save_as(paths[0])
    report = run_preprocess(tmp_path / "data", tmp_path / "cache", SETTINGS)
    assert list(read_manifest(tmp_path / "cache").subjects) == ["good"]
    [error] = report.failed.values()
    assert error.startswith(f"bad: bad/ct/{paths[0].name}: series ") and "modality MR, not CT" in error


def test_real_subject_as_a_dicom_series_caches_like_its_nifti(tmp_path):
    """The reference subject's CT written as a DICOM series (30 slices) by this test, its 117 NIfTI masks as they
    are: the cache is the same, voxel for voxel."""
    real = require_real_subject() / "s0001"
    for root in ("nifti", "dicom"):
        (tmp_path / root / "s0001").mkdir(parents=True)
        (tmp_path / root / "s0001" / "segmentations").symlink_to(real / "segmentations")
    (tmp_path / "nifti" / "s0001" / "ct.nii.gz").symlink_to(real / "ct.nii.gz")
    img = nib.load(real / "ct.nii.gz")
    write_dicom_series(tmp_path / "dicom" / "s0001" / "ct", np.asarray(img.dataobj).astype(np.int16), img.affine)
    settings = PreprocessConfig(spacing=None, size=128, workers=0)
    for root in ("nifti", "dicom"):
        assert run_preprocess(tmp_path / root, tmp_path / f"cache_{root}", settings).ok
    assert_same_caches(tmp_path / "cache_nifti", tmp_path / "cache_dicom")


def test_original_space_evaluation_reads_the_same_formats(tiny_dataset, tiny_cache, tmp_path):
    """evaluate --original-space against a copy of the dataset with DICOM CTs and NRRD masks scores exactly as
    against the NIfTI dataset (same files' content, so the cache's fingerprints are not compared here)."""
    from functools import partial

    from checkpoints import make_checkpoint
    from ctslice.config import EvaluateConfig, LoaderConfig
    from ctslice.evaluate.run import run_evaluation
    from ctslice.preprocess.reference import open_reference

    ckpt = make_checkpoint(tiny_cache, tmp_path / "run" / "ckpt.pth")
    mixed = tmp_path / "mixed"
    shutil.copytree(tiny_dataset, mixed)
    for i, folder in enumerate(sorted(p for p in mixed.iterdir() if p.is_dir())):
        convert_subject(folder, "dicom" if i % 2 else ".mha", ".nrrd")
    cfg, loader = EvaluateConfig(device="cpu"), LoaderConfig(workers=0, batch_size=8)
    docs = []
    for data, cache in ((tiny_dataset, tiny_cache), (mixed, tmp_path / "cache_mixed")):
        if data is mixed:  # a cache of the converted dataset, so that its files are the reference's
            assert run_preprocess(mixed, cache, PreprocessConfig(spacing=None, size=40, workers=0)).ok
            ckpt = make_checkpoint(cache, tmp_path / "run2" / "ckpt.pth")
        run_evaluation(ckpt, cfg, loader, split="train", reference=partial(open_reference, data),
                       out=tmp_path / f"ev_{data.name}")
        docs.append(json.loads((tmp_path / f"ev_{data.name}" / "evaluation.json").read_text()))
    assert not docs[1]["skipped"] and docs[0]["settings"]["space"] == docs[1]["settings"]["space"] == "original"
    nifti, converted = docs[0]["per_subject"], docs[1]["per_subject"]
    assert nifti and nifti.keys() == converted.keys()
    for sid, classes in nifti.items():  # same counts; mm-based numbers differ by the DICOM decimal strings (1e-9)
        for name, scores in classes.items():
            assert scores.keys() == converted[sid][name].keys()
            for key, value in scores.items():
                assert converted[sid][name][key] == (pytest.approx(value, rel=1e-6, nan_ok=True)
                                                     if isinstance(value, float) else value), (sid, name, key)

"""Tiny hand-made NIfTI datasets for tests (10x12x5 voxels), so each test shows exactly what it feeds in."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np

SHAPE = (10, 12, 5)
AFFINE = np.diag([2.0, 2.0, 3.0, 1.0])


def save(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


def ct_volume(shape=SHAPE, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(-1000, 1500, size=shape).astype(np.int16)


def box_mask(shape=SHAPE, lo=(2, 2, 1), hi=(6, 6, 4)) -> np.ndarray:
    mask = np.zeros(shape, dtype=np.uint8)
    mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = 1
    return mask


def ts_subject(root: Path, sid: str, masks: dict[str, np.ndarray] | None = None, shape=SHAPE,
               affine: np.ndarray = AFFINE, seed: int = 0) -> Path:
    """TotalSegmentator layout: root/sid/ct.nii.gz + segmentations/<name>.nii.gz."""
    folder = root / sid
    save(folder / "ct.nii.gz", ct_volume(shape, seed), affine)
    masks = {"liver": box_mask(shape), "spleen": box_mask(shape, (5, 5, 2), (9, 9, 5))} if masks is None else masks
    for name, mask in masks.items():
        save(folder / "segmentations" / f"{name}.nii.gz", mask, affine)
    return folder


def nnunet_dataset(root: Path, cases: dict[str, np.ndarray], labels: dict) -> Path:
    """nnU-Net layout: imagesTr/<case>_0000.nii.gz, labelsTr/<case>.nii.gz, dataset.json."""
    for i, (case, label) in enumerate(cases.items()):
        save(root / "imagesTr" / f"{case}_0000.nii.gz", ct_volume(label.shape, i))
        save(root / "labelsTr" / f"{case}.nii.gz", label.astype(np.uint8))
    (root / "dataset.json").write_text(json.dumps({"labels": labels, "file_ending": ".nii.gz"}))
    return root

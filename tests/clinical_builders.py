"""Tiny DICOM series, NRRD and MetaImage files written from a NIfTI-convention volume (array indexed (i, j, k),
RAS+ affine), so that a reader test can compare what comes back with what went in, voxel by voxel.

The DICOM series are written with pydicom, one CT slice per file, with every tag the readers look at set from the
affine (the LPS frame: x and y of RAS negated): ImageOrientationPatient from the first two affine columns,
ImagePositionPatient of slice k from the affine, PixelSpacing, and the HU values stored as HU + 1024 with a
RescaleIntercept of -1024, as scanners do. File names and InstanceNumbers are shuffled: order must come from
positions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

LPS = np.diag([-1.0, -1.0, 1.0, 1.0])

# An oblique affine: rotated 20 degrees about z and 10 about x, voxels 0.8 x 0.9 x 2.5 mm, slices stacked along
# the plane's normal (no gantry tilt).
_a, _b = np.radians(20), np.radians(10)
_R = np.array([[np.cos(_a), -np.sin(_a), 0], [np.sin(_a), np.cos(_a), 0], [0, 0, 1]]) @ \
    np.array([[1, 0, 0], [0, np.cos(_b), -np.sin(_b)], [0, np.sin(_b), np.cos(_b)]])
OBLIQUE = np.eye(4)
OBLIQUE[:3, :3] = _R @ np.diag([0.8, 0.9, 2.5])
OBLIQUE[:3, 3] = (-40.0, 25.0, 110.0)
AXIAL = np.array([[-0.7, 0, 0, 90.0], [0, -0.7, 0, 60.0], [0, 0, 2.0, -30.0], [0, 0, 0, 1]])  # LPS-like, as DICOM
REVERSED = AXIAL @ np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, -1, 6], [0, 0, 0, 1]])  # slice k goes to the feet


def write_dicom_series(folder: Path, hu: np.ndarray, affine: np.ndarray, *, series_uid: str | None = None,
                       modality: str = "CT", description: str = "test series", seed: int = 0,
                       slope: float = 1.0, intercept: float = -1024.0) -> list[Path]:
    """One file per slice k of `hu` (int16 HU, (i, j, k)) in `folder`, named in shuffled order; returns the
    paths in slice order (k = 0, 1, ...)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    lps = LPS @ affine
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    row_dir, col_dir = lps[:3, 0] / spacing[0], lps[:3, 1] / spacing[1]
    series_uid = series_uid or generate_uid()
    study, frame = generate_uid(prefix="1.2.826.0.1.3680043.8.498.1."), generate_uid()
    n = hu.shape[2]
    order = np.random.default_rng(seed).permutation(n)
    paths = []
    for k in range(n):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, ds.file_meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series_uid, frame
        ds.Modality, ds.SeriesDescription, ds.SeriesNumber = modality, description, 3
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Test^Phantom", "P1", "", "O"
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20260101", "120000", "1", ""
        ds.ReferringPhysicianName, ds.Manufacturer = "", "ctslice tests"
        ds.InstanceNumber = int(order[k]) + 1  # shuffled: the reader must sort by position
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImageOrientationPatient = [f"{v:.10g}" for v in (*row_dir, *col_dir)]
        ds.ImagePositionPatient = [f"{v:.10g}" for v in (lps @ [0, 0, k, 1])[:3]]
        ds.PixelSpacing = [f"{spacing[1]:.10g}", f"{spacing[0]:.10g}"]  # between rows (j), between columns (i)
        ds.SliceThickness = f"{spacing[2]:.10g}"
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = f"{slope:g}", f"{intercept:g}", "HU"
        stored = np.rint((hu[:, :, k].T.astype(np.float64) - intercept) / slope).astype(np.int16)
        ds.Rows, ds.Columns = stored.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.PixelData = np.ascontiguousarray(stored).tobytes()
        path = folder / f"IM{order[k]:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def write_itk(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    """`data` ((i, j, k), RAS+ affine) as .nrrd / .mha / .mhd through SimpleITK, which stores LPS."""
    lps = LPS @ affine
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    image = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0)))
    image.SetSpacing([float(s) for s in spacing])
    image.SetOrigin([float(v) for v in lps[:3, 3]])
    image.SetDirection([float(v) for v in (lps[:3, :3] / spacing).ravel()])
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path), useCompression=path.suffix != ".mhd")
    return path


def assert_same_voxels(data: np.ndarray, affine: np.ndarray, expected: np.ndarray, expected_affine: np.ndarray,
                       tolerance_mm: float = 1e-4) -> None:
    """Every voxel of (data, affine) lies where a voxel of (expected, expected_affine) lies (world coordinates
    within `tolerance_mm`) and holds the same value; the two grids may differ in axis order and direction."""
    assert sorted(data.shape) == sorted(expected.shape), (data.shape, expected.shape)
    ijk = np.indices(data.shape).reshape(3, -1).astype(float)
    world = affine[:3, :3] @ ijk + affine[:3, 3:4]
    source = np.linalg.inv(expected_affine)[:3] @ np.vstack([world, np.ones(ijk.shape[1])])
    index = np.rint(source).astype(int)
    back = expected_affine[:3, :3] @ index + expected_affine[:3, 3:4]
    assert np.max(np.abs(back - world)) < tolerance_mm, "voxel centres are not on the expected grid"
    assert all((index[a] >= 0).all() and (index[a] < expected.shape[a]).all() for a in range(3))
    assert np.unique(index, axis=1).shape[1] == ijk.shape[1], "two voxels at one place"
    np.testing.assert_array_equal(data.reshape(-1), expected[tuple(index)])

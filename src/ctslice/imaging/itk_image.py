"""SimpleITK images as the nibabel images the rest of ctslice reads, and back.

ITK keeps world coordinates in LPS (x to the patient's left, y to the posterior) and arrays in (k, j, i) order;
NIfTI and nibabel, which every stage reads through, use RAS+ and (i, j, k). The conversion is exact: the affine is
ITK's (direction x spacing, origin) with x and y negated, and the array is transposed, not resampled:

    affine = itk_affine(origin, spacing, direction)      # 4x4 RAS+, voxel (i, j, k) -> mm
    origin, spacing, direction = lps_geometry(affine)    # the inverse, for writing .nrrd / .mha
    img = lazy_image(shape, dtype, affine, read)         # a nib.Nifti1Image whose data `read()` gives on demand

The image's header carries the affine as sform and qform with code 1 (scanner coordinates), and the voxel data is
read only when asked for (`np.asanyarray(img.dataobj)`), so the same header checks (memory, geometry) run before
anything is decoded, as for NIfTI.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import nibabel as nib
import numpy as np

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def itk_affine(origin: Sequence[float], spacing: Sequence[float], direction: Sequence[float]) -> np.ndarray:
    """ITK geometry (LPS; direction row-major 3x3, its columns the axes) -> 4x4 RAS+ affine of index (i, j, k)."""
    lps = np.eye(4)
    lps[:3, :3] = np.asarray(direction, dtype=float).reshape(3, 3) * np.asarray(spacing, dtype=float)
    lps[:3, 3] = origin
    return LPS_TO_RAS @ lps


def lps_geometry(affine: np.ndarray) -> tuple[list[float], list[float], list[float]]:
    """RAS+ affine -> ITK (origin, spacing, direction row-major), all in LPS."""
    lps = LPS_TO_RAS @ np.asarray(affine, dtype=float)
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    return [float(v) for v in lps[:3, 3]], [float(v) for v in spacing], [float(v) for v in
                                                                         (lps[:3, :3] / spacing).ravel()]


def to_ijk(array_kji: np.ndarray) -> np.ndarray:
    """sitk.GetArrayFromImage's (k, j, i) array as (i, j, k): a transposed view, Fortran-ordered like NIfTI data."""
    return array_kji.transpose(2, 1, 0)


class LazyArray:
    """Array-like voxel data that `read()` produces when numpy asks for it (nibabel keeps it as the image's
    dataobj). `slope`/`inter`: the rescale the reader applies (DICOM), so the memory estimate sees scaled data."""

    def __init__(self, shape: tuple[int, int, int], dtype: np.dtype, read: Callable[[], np.ndarray],
                 slope: float = 1.0, inter: float = 0.0):
        self.shape, self.dtype, self._read = tuple(int(s) for s in shape), np.dtype(dtype), read
        self.slope, self.inter = slope, inter

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        data = self._read()
        return data if dtype is None else data.astype(dtype)


def lazy_image(shape: tuple[int, int, int], dtype: np.dtype, affine: np.ndarray, read: Callable[[], np.ndarray],
               slope: float = 1.0, inter: float = 0.0) -> nib.Nifti1Image:
    """A nibabel image with `affine` (RAS+) as sform and qform, code 1 (scanner), and data from `read()`."""
    header = nib.Nifti1Header()
    header.set_data_dtype(dtype)
    img = nib.Nifti1Image(LazyArray(shape, dtype, read, slope, inter), affine, header)
    img.header.set_qform(affine, code=1)
    img.header.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm")
    return img


def label_itk_image(labels: np.ndarray, affine: np.ndarray):
    """An (i, j, k) label volume on the grid of `affine` (RAS+) as a SimpleITK image (LPS geometry)."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(labels.transpose(2, 1, 0)))
    origin, spacing, direction = lps_geometry(affine)
    image.SetOrigin(origin)
    image.SetSpacing(spacing)
    image.SetDirection(direction)
    return image

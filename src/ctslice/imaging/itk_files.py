"""NRRD (.nrrd, 3D Slicer's .seg.nrrd) and MetaImage (.mha, .mhd + its data file) volumes, read with SimpleITK.

ITK is the reference implementation of both formats (Slicer and ITK-SNAP write them through it): it applies the
NRRD `space` (a RAS-space file comes back in LPS like any other) and MetaImage's TransformMatrix and Offset, and
reads the header alone (`ReadImageInformation`) so that the checks run before the voxels are decoded.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from ..errors import InputError
from .itk_image import itk_affine, lazy_image, to_ijk
from .volume import regular_file


def itk_message(error: Exception, path: Path | None = None) -> str:
    """The last line of a SimpleITK exception without its 'sitk::ERROR:' prefix, the path shortened to its name."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = (lines[-1] if lines else type(error).__name__).split("ERROR:")[-1].strip()
    return text.replace(str(path), path.name) if path is not None else text


def numpy_dtype(pixel_id: int) -> np.dtype:
    """The numpy type SimpleITK gives for a pixel type (from a one-voxel image: no table to keep in step)."""
    import SimpleITK as sitk

    return sitk.GetArrayViewFromImage(sitk.Image([1, 1, 1], pixel_id)).dtype


def load_itk_file(path: Path, subject: str, name: str | None, kind: str) -> nib.Nifti1Image:
    """The header of a .nrrd / .mha / .mhd file as a lazy nibabel image (RAS+ affine, (i, j, k) data); one-line
    InputErrors for what is not one 3D scalar volume."""
    import SimpleITK as sitk

    regular_file(path, subject, name)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        raise InputError(subject, name, f"not a readable {kind} file ({itk_message(e, path)})") from None
    size, components = tuple(reader.GetSize()), reader.GetNumberOfComponents()
    if len(size) == 4 and size[3] == 1:
        raise InputError(subject, name, f"a 4D volume {size} with one time point: save it as 3D")
    if len(size) != 3:
        raise InputError(subject, name, f"expected a 3D volume, got size {size} ({len(size)}D)")
    if components != 1:
        raise InputError(subject, name, f"{components} values per voxel (RGB, or a .seg.nrrd with overlapping "
                                        "segments in several layers?): expected one scalar per voxel")
    if min(size) < 1:
        raise InputError(subject, name, f"empty volume, size {size}")
    affine = itk_affine(reader.GetOrigin(), reader.GetSpacing(), reader.GetDirection())
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise InputError(subject, name, "invalid geometry (singular or not finite spacing/direction)")

    def read() -> np.ndarray:
        try:
            image = reader.Execute()
        except RuntimeError as e:
            raise InputError(subject, name, f"unreadable or truncated data ({itk_message(e, path)})") from None
        return to_ijk(sitk.GetArrayFromImage(image))

    return lazy_image(size, numpy_dtype(reader.GetPixelID()), affine, read)


def mhd_data_files(path: Path) -> list[Path]:
    """The data file a .mhd header names (ElementDataFile), when it is one file beside it: read with the header,
    so it is fingerprinted with it. Empty for LOCAL (data inside), lists, patterns and paths into other folders
    (those are read by ITK but not fingerprinted)."""
    if not path.is_file():  # never open a FIFO: it would wait for a writer
        return []
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16).decode("latin-1")
    except OSError:
        return []
    for line in head.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "ElementDataFile":
            value = value.strip()
            plain = value and not any(c in value for c in " %/\\") and value not in ("LOCAL", "LIST")
            return [path.parent / value] if plain else []  # a file beside the header, nothing outside its folder
    return []

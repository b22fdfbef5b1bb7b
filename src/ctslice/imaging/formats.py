"""The one place that knows which reader a CT or mask needs: every stage opens volumes through `load_image`
(`volume.load_header` hands everything that is not NIfTI to it).

    kind(Path("ct.nrrd"))            # 'nrrd'      .nrrd, 3D Slicer's .seg.nrrd
    kind(Path("ct.mha"))             # 'metaimage' .mha, .mhd (+ its data file)
    kind(Path("series/"))            # 'dicom'     a folder holding DICOM files (by content: 'DICM' at byte 128)
    kind(Path("ct.nii.gz"))          # 'nifti'     .nii, .nii.gz; None for anything else
    img = load_image(path, subject, file_name, series=None)  # a nibabel image: RAS+ affine, (i, j, k) data

Whatever the format, the image is a nibabel image with the RAS+ affine of the (i, j, k) array, so geometry, caching
and prediction work the same way for all of them (`itk_image` converts ITK's LPS exactly).
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib

NIFTI_SUFFIXES = (".nii.gz", ".nii")
NRRD_SUFFIXES = (".seg.nrrd", ".nrrd")
METAIMAGE_SUFFIXES = (".mha", ".mhd")
FILE_SUFFIXES = NIFTI_SUFFIXES + NRRD_SUFFIXES + METAIMAGE_SUFFIXES
"""Suffixes of the volume files ctslice reads (any case), longest first so that stripping takes the whole one."""
_KIND_OF_SUFFIX = {**{s: "nifti" for s in NIFTI_SUFFIXES}, **{s: "nrrd" for s in NRRD_SUFFIXES},
                   **{s: "metaimage" for s in METAIMAGE_SUFFIXES}}
_NAMES = {"nrrd": "NRRD", "metaimage": "MetaImage"}


def split_suffix(name: str) -> tuple[str, str] | None:
    """(stem, suffix as written) of a volume file's name, or None when it is not one."""
    lower = name.lower()
    for suffix in FILE_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)], name[-len(suffix):]
    return None


def kind(path: Path) -> str | None:
    """'nifti', 'nrrd', 'metaimage' (by suffix) or 'dicom' (a folder with DICOM files), else None."""
    parts = split_suffix(Path(path).name)
    if parts is not None:
        return _KIND_OF_SUFFIX[parts[1].lower()]
    from .dicom_series import is_dicom_folder

    return "dicom" if is_dicom_folder(Path(path)) else None


def load_image(path: Path, subject: str, name: str | None, series: str | None = None) -> nib.Nifti1Image:
    """The header of a CT or mask in any supported format, data read on demand; InputError naming the subject and
    file (for DICOM: the series and the slice file) when it cannot be used. `series`: the SeriesInstanceUID to
    read from a folder holding several."""
    path = Path(path)
    found = kind(path)
    if found == "dicom":
        from .dicom_series import load_dicom_series

        return load_dicom_series(path, subject, name, series)
    if found in _NAMES:
        from .itk_files import load_itk_file

        return load_itk_file(path, subject, name, _NAMES[found])
    from .volume import load_header

    return load_header(path, subject, name)  # NIfTI, and the errors for anything else

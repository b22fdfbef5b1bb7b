"""A folder holding one DICOM CT series, read as one volume, or a one-line error naming the series and the file.

pydicom reads the headers (no pixels): the files are grouped by SeriesInstanceUID, and the chosen series is checked
and ordered by position along the slice normal (ImagePositionPatient projected on the cross product of the
ImageOrientationPatient cosines), never by file name or InstanceNumber. SimpleITK (GDCM) then reads the pixels of
the files in that order and applies RescaleSlope/Intercept, so the values are Hounsfield units, whatever the
transfer syntax (GDCM decodes JPEG, JPEG 2000 and RLE; pydicom alone would need extra plugins).

Refused, not resampled: several series (unless one is chosen), a modality other than CT, gantry tilt (slices offset
in their plane), slice spacing that varies or has gaps (a missing slice), two slices at one position, slices of
different size or orientation, a file that is not DICOM or is truncated. The geometry the headers give is checked
against the one ITK builds, so both readers agree on every voxel's position.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from ..errors import InputError
from .itk_files import itk_message
from .itk_image import itk_affine, lazy_image, to_ijk

DICM_OFFSET = 128
SPACING_TOLERANCE_MM = 0.02
SPACING_TOLERANCE_SHARE = 0.01
"""Steps between slices that differ by less than 0.02 mm or 1 % are the same spacing: scanners round positions
(some to 0.01 mm), which makes 0.625 mm steps read as 0.62 and 0.63."""
TILT_TOLERANCE_MM = 0.01
PIXEL_DATA = 0x7FE00010
DICOMDIR_CLASS = "1.2.840.10008.1.3.10"  # Media Storage Directory Storage


@dataclass(frozen=True)
class Slice:
    path: Path
    position: np.ndarray
    """ImagePositionPatient (LPS, mm)."""
    orientation: np.ndarray
    """ImageOrientationPatient: row direction (along a row, i.e. increasing column), column direction."""
    spacing: tuple[float, float]
    """PixelSpacing: between rows, between columns (mm)."""
    size: tuple[int, int]
    """Rows, Columns."""
    modality: str
    slope: float
    intercept: float
    data_end: int | None
    """Where the pixel data ends in the file (None when its length is undefined: compressed, encapsulated)."""


@dataclass(frozen=True)
class Series:
    uid: str
    description: str
    files: tuple[Path, ...]

    def describe(self) -> str:
        return f"series {self.uid} ({self.description or 'no description'}, {len(self.files)} files)"


def is_dicom_file(path: Path) -> bool:
    """Part 10 files carry 'DICM' after a 128-byte preamble (the content decides, not the suffix)."""
    try:
        with open(path, "rb") as f:
            head = f.read(DICM_OFFSET + 4)
    except OSError:
        return False
    return head[DICM_OFFSET:] == b"DICM"


def dicom_files(folder: Path) -> list[Path]:
    """The folder's visible regular files that are DICOM (not its subfolders; other files are ignored)."""
    try:
        entries = sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.is_file())
    except OSError:
        return []
    return [p for p in entries if is_dicom_file(p)]


def is_dicom_folder(folder: Path) -> bool:
    """A folder with a DICOM file in it; files named like other volumes (x.nii.gz) are not opened to find out."""
    from .formats import split_suffix

    try:
        return folder.is_dir() and any(is_dicom_file(p) for p in folder.iterdir()
                                       if not p.name.startswith(".") and split_suffix(p.name) is None
                                       and p.is_file())
    except OSError:
        return False


def _name(folder_name: str | None, path: Path) -> str:
    return f"{folder_name}/{path.name}" if folder_name else str(path)


def find_series(folder: Path, subject: str, name: str | None) -> dict[str, tuple[Series, list]]:
    """SeriesInstanceUID -> (series, its pydicom headers), reading headers only."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    files = dicom_files(folder)
    if not files:
        raise InputError(subject, name, "no DICOM files in this folder")
    grouped: dict[str, list] = defaultdict(list)
    for path in files:
        try:
            ds = pydicom.dcmread(path, defer_size=1024)  # large values (the pixels) are not read, only located
        except (InvalidDicomError, OSError, EOFError, ValueError, KeyError, TypeError) as e:
            raise InputError(subject, _name(name, path), f"unreadable DICOM header ({type(e).__name__}: {e})") from None
        if str(getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", "")) == DICOMDIR_CLASS:
            continue  # the index of a CD or export, not an image
        uid = str(ds.get("SeriesInstanceUID", "") or "")
        if not uid:
            raise InputError(subject, _name(name, path), "damaged DICOM header (no SeriesInstanceUID; truncated?)")
        grouped[uid].append((path, ds))
    if not grouped:
        raise InputError(subject, name, "no DICOM images in this folder (only a DICOMDIR index)")
    return {uid: (Series(uid, str(items[0][1].get("SeriesDescription", "") or ""), tuple(p for p, _ in items)),
                  items) for uid, items in sorted(grouped.items())}


def choose_series(found: dict[str, tuple[Series, list]], pick: str | None, subject: str, name: str | None
                  ) -> tuple[Series, list]:
    if pick is not None:
        if pick not in found:
            raise InputError(subject, name, f"no series {pick} here; found {_listing(found)}")
        return found[pick]
    if len(found) > 1:
        raise InputError(subject, name, f"{len(found)} series in one folder, choose one (predict --series UID): "
                                        f"{_listing(found)}")
    return next(iter(found.values()))


def _listing(found: dict[str, tuple[Series, list]]) -> str:
    return "; ".join(series.describe() for series, _ in found.values())


def _slice(path: Path, ds, series: Series, subject: str, name: str | None) -> Slice:
    where = _name(name, path)
    pixels = ds.get_item(PIXEL_DATA) if PIXEL_DATA in ds else None
    if pixels is None:
        raise InputError(subject, where, f"{series.describe()}: no pixel data")
    length = getattr(pixels, "length", None)
    if length is None:  # read, not deferred: a small value
        length = len(pixels.value or b"")
    tell = getattr(pixels, "value_tell", None)
    data_end = None if length == 0xFFFFFFFF or tell is None else tell + length
    try:
        return Slice(path, np.asarray(ds.ImagePositionPatient, dtype=float),
                     np.asarray(ds.ImageOrientationPatient, dtype=float),
                     tuple(float(v) for v in ds.PixelSpacing), (int(ds.Rows), int(ds.Columns)),
                     str(ds.get("Modality", "") or ""), float(ds.get("RescaleSlope", 1) or 1),
                     float(ds.get("RescaleIntercept", 0) or 0), data_end)
    except (AttributeError, ValueError, TypeError) as e:
        raise InputError(subject, where, f"{series.describe()}: missing or bad geometry tag "
                                         f"(ImagePositionPatient, ImageOrientationPatient, PixelSpacing, Rows, "
                                         f"Columns): {e}") from None


def check_and_order(series: Series, headers: list, subject: str, name: str | None) -> tuple[list[Slice], float]:
    """The series' slices ordered by position along the normal, and the slice step (mm); InputError otherwise."""
    slices = [_slice(p, ds, series, subject, name) for p, ds in headers]
    first = slices[0]
    for s, (_, ds) in zip(slices, headers):
        where, what = _name(name, s.path), series.describe()
        if s.modality != "CT":
            raise InputError(subject, where, f"{what}: modality {s.modality or 'missing'}, not CT")
        if int(ds.get("NumberOfFrames", 1) or 1) > 1:
            raise InputError(subject, where, f"{what}: a multi-frame (enhanced) image; only one slice per file is "
                                             "read")
        if s.size != first.size or not np.allclose(s.spacing, first.spacing, atol=1e-4):
            raise InputError(subject, where, f"{what}: slice size or pixel spacing {s.size} {s.spacing} differs "
                                             f"from {first.path.name}'s {first.size} {first.spacing}")
        if not np.allclose(s.orientation, first.orientation, atol=1e-4):
            raise InputError(subject, where, f"{what}: orientation differs from {first.path.name}'s")
        if s.data_end is not None and s.path.stat().st_size < s.data_end:
            raise InputError(subject, where, f"{what}: truncated file ({s.path.stat().st_size} bytes, its pixel "
                                             f"data ends at byte {s.data_end})")
        tilt = float(ds.get("GantryDetectorTilt", 0) or 0)
        if abs(tilt) > 1e-3:
            raise InputError(subject, where, f"{what}: gantry tilt of {tilt:g} degrees (slices are not stacked "
                                             "along their normal); resample it first")
    if len(slices) < 2:
        raise InputError(subject, _name(name, first.path), f"{series.describe()}: one slice is not a volume")
    row, col = first.orientation[:3], first.orientation[3:]
    normal = np.cross(row, col)
    slices.sort(key=lambda s: float(s.position @ normal))
    along = np.array([s.position @ normal for s in slices])
    offsets = np.array([s.position - first.position - ((s.position - first.position) @ normal) * normal
                        for s in slices])
    offsets -= offsets[0]
    drift = np.linalg.norm(offsets, axis=1)
    if drift.max() > TILT_TOLERANCE_MM:
        k = int(np.argmax(drift))
        raise InputError(subject, _name(name, slices[k].path),
                         f"{series.describe()}: gantry tilt, slices shifted in their plane by up to "
                         f"{drift.max():.3g} mm; resample it first")
    steps = np.diff(along)
    if steps.min() < SPACING_TOLERANCE_MM:
        k = int(np.argmin(steps))
        raise InputError(subject, _name(name, slices[k + 1].path),
                         f"{series.describe()}: two slices at one position ({slices[k].path.name} too)")
    unit = float(steps.min())  # the spacing: a missing slice only makes gaps larger
    tolerance = max(SPACING_TOLERANCE_MM, SPACING_TOLERANCE_SHARE * unit)
    for k, gap in enumerate(steps):
        if gap - unit > tolerance:
            missing = round(gap / unit) - 1
            what = (f"{missing} missing slice(s): a gap of {gap:g} mm where the spacing is {unit:g} mm"
                    if missing >= 1 and abs(gap - (missing + 1) * unit) <= tolerance
                    else f"slice spacing varies ({steps.min():g} to {steps.max():g} mm)")
            raise InputError(subject, _name(name, slices[k + 1].path),
                             f"{series.describe()}: {what}, between {slices[k].path.name} and here")
    step = float(along[-1] - along[0]) / (len(slices) - 1)  # as ITK: positions rounded in the headers average out
    return slices, step


def header_affine(slices: list[Slice], step: float) -> np.ndarray:
    """The RAS+ affine of (column, row, slice) = (i, j, k) from the ordered slices' headers."""
    first = slices[0]
    row, col = first.orientation[:3], first.orientation[3:]
    direction = np.column_stack([row, col, np.cross(row, col)])
    spacing = (first.spacing[1], first.spacing[0], step)
    return itk_affine(first.position, spacing, direction.ravel())


def load_dicom_series(folder: Path, subject: str, name: str | None, series_uid: str | None = None
                      ) -> nib.Nifti1Image:
    """The folder's CT series (or `series_uid` of several) as a lazy nibabel image: checks on the headers now,
    pixels through SimpleITK when the data is asked for."""
    import SimpleITK as sitk

    series, headers = choose_series(find_series(folder, subject, name), series_uid, subject, name)
    slices, step = check_and_order(series, headers, subject, name)
    affine = header_affine(slices, step)
    rows, cols = slices[0].size
    integral = all(s.slope == round(s.slope) and s.intercept == round(s.intercept) for s in slices)
    dtype, pixel = (np.int32, sitk.sitkInt32) if integral else (np.float32, sitk.sitkFloat32)

    def read() -> np.ndarray:
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames([str(s.path) for s in slices])
        reader.SetOutputPixelType(pixel)
        try:
            image = reader.Execute()
        except RuntimeError as e:
            raise InputError(subject, name, f"{series.describe()}: unreadable pixel data ({itk_message(e)})") from None
        read_affine = itk_affine(image.GetOrigin(), image.GetSpacing(), image.GetDirection())
        if tuple(image.GetSize()) != (cols, rows, len(slices)) or \
                np.max(np.abs(read_affine - affine)) > 1e-3 * max(1.0, float(np.abs(affine).max())):
            raise InputError(subject, name, f"{series.describe()}: ITK's geometry disagrees with the headers'")
        return to_ijk(sitk.GetArrayFromImage(image))

    return lazy_image((cols, rows, len(slices)), dtype, affine, read, slices[0].slope, slices[0].intercept)


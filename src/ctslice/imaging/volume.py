"""Reading NIfTI volumes with the checks that turn bad files into errors naming the subject and file."""

from __future__ import annotations

import gzip
import os
import stat
import zlib
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from ..errors import InputError
from . import formats
from .nifti_read import GUNZIP_ERRORS, decode_gz, peek_nifti1_gz, read_voxels

# Real datasets carry sform differences of ~1e-5 mm between a CT and its masks (float32 round-trips);
# anything beyond this is a different grid.
AFFINE_TOLERANCE_MM = 1e-3

_READ_ERRORS = (OSError, EOFError, zlib.error, gzip.BadGzipFile, ValueError, nib.filebasedimages.ImageFileError,
                *GUNZIP_ERRORS)


# Deflate expands at most ~1032:1, so a .gz file of n bytes holds at most this many times n bytes of data.
MAX_GZIP_RATIO = 1100
_SCALAR_KINDS = "iufb"  # ints, unsigned, floats, bool: not RGB (structured) or complex voxels
MIN_AFFINE_DET = 1e-12  # below this the voxel axes are (nearly) degenerate


def load_header(path: Path, subject: str, name: str) -> nib.Nifti1Image:
    """Open a NIfTI file (header only; data stays on disk) and check it is one 3D scalar volume whose header is
    consistent with the file's size (a tiny file declaring gigabytes is refused before anything is decoded).
    NRRD, MetaImage and DICOM series folders go to their readers (`formats`), which return the same kind of image."""
    if formats.kind(path) not in (None, "nifti"):
        return formats.load_image(path, subject, name)
    st = regular_file(path, subject, name)
    try:
        img = nib.load(path)
    except FileNotFoundError:
        raise InputError(subject, name, "file not found") from None
    except _READ_ERRORS as e:
        raise InputError(subject, name, _describe(path, e)) from None
    shape = img.shape
    if len(shape) == 4 and shape[3] == 1:  # a 3D volume stored with a singleton 4th dimension
        img = drop_singleton_time(img)
        shape = img.shape
    if len(shape) != 3:
        raise InputError(subject, name, f"expected a 3D volume, got shape {tuple(shape)} ({len(shape)}D)")
    if min(shape) < 1:
        raise InputError(subject, name, f"empty volume, shape {tuple(shape)}")
    if not np.all(np.isfinite(img.affine)) or abs(np.linalg.det(img.affine[:3, :3])) < MIN_AFFINE_DET:
        raise InputError(subject, name, "invalid affine (singular or not finite)")
    dtype = img.get_data_dtype()
    if dtype.kind not in _SCALAR_KINDS or dtype.fields is not None:
        raise InputError(subject, name, f"voxels of type {dtype} (RGB or complex?): expected one scalar per voxel")
    declared = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    limit = st.st_size * MAX_GZIP_RATIO if str(path).endswith(".gz") else st.st_size
    if declared > limit:
        raise InputError(subject, name, f"header declares {'x'.join(map(str, shape))} voxels of {dtype} "
                                        f"({declared / 1e9:.2f} GB), more than this {st.st_size}-byte file can hold: "
                                        "truncated or damaged")
    return img


def regular_file(path: Path, subject: str, name: str | None) -> os.stat_result:
    """The file's stat, or InputError: missing, unreadable, or not a regular file (a FIFO would hang the read, a
    device never end)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise InputError(subject, name, "file not found") from None
    except OSError as e:
        raise InputError(subject, name, f"cannot read file ({e.strerror or e})") from None
    if not stat.S_ISREG(st.st_mode):
        raise InputError(subject, name, "not a regular file (a FIFO, device or folder)")
    return st


def drop_singleton_time(img: nib.Nifti1Image) -> nib.Nifti1Image:
    """The 3D image of an X x Y x Z x 1 file, still on disk: the proxy is reshaped, not read (`img.slicer` would
    decode the whole file before the memory check, and its array lacks the proxy's scaling that checks read)."""
    header = img.header.copy()
    header.set_data_shape(img.shape[:3])
    return nib.Nifti1Image(img.dataobj.reshape(img.shape[:3]), img.affine, header)


def _describe(path: Path, error: Exception) -> str:
    """Say 'truncated' when that is what it is: nibabel only reports it cannot work out the file type."""
    if str(path).endswith(".gz"):
        try:
            with gzip.open(path, "rb") as f:
                while f.read(1 << 20):
                    pass
        except EOFError:
            return "truncated gzip file (incomplete download or copy?)"
        except (OSError, zlib.error):
            return "corrupt gzip file"
    return f"not a readable NIfTI file ({type(error).__name__}: {str(error).replace(str(path), path.name)})"


def read_data(img: nib.Nifti1Image, dtype: type, subject: str, name: str) -> np.ndarray:
    """Decode the voxel data (this is where truncated or corrupt .gz files fail). A .nii.gz's array is read-only
    (nifti_read.read_voxels: a view of the decompressed bytes)."""
    try:
        data = read_voxels(img.dataobj)
    except _READ_ERRORS as e:
        raise InputError(subject, name, f"unreadable or truncated data ({type(e).__name__}: {e})") from None
    return _as_requested(data, dtype, subject, name)


def _as_requested(data: np.ndarray, dtype: type, subject: str, name: str) -> np.ndarray:
    """Float voxels rounded (after checking they are finite); others as they are."""
    if data.dtype == dtype:
        return data
    if np.issubdtype(data.dtype, np.floating):
        if not np.all(np.isfinite(data)):
            raise InputError(subject, name, "contains NaN or infinite values")
        data = np.rint(data)
    return data


def read_mask(path: Path, ct: nib.Nifti1Image, subject: str, name: str) -> np.ndarray:
    """load_header, check_same_grid against the CT and read_data(np.uint8) of a mask file, in one step: a plain
    .nii.gz NIfTI-1 on the CT's grid is read with one read of the file and no image object (see
    nifti_read.peek_nifti1_gz); anything else, or anything wrong with it, goes the ordinary way, which says what."""
    peek = peek_nifti1_gz(path) if str(path).lower().endswith(".nii.gz") else None
    if peek is not None:
        header, proxy, compressed = peek
        affine, dtype = header.get_best_affine(), proxy.dtype
        declared = int(np.prod(proxy.shape, dtype=np.int64)) * dtype.itemsize
        if (tuple(proxy.shape) == tuple(ct.shape) and np.all(np.isfinite(affine))
                and abs(np.linalg.det(affine[:3, :3])) >= MIN_AFFINE_DET and dtype.kind in _SCALAR_KINDS
                and dtype.fields is None and declared <= len(compressed) * MAX_GZIP_RATIO
                and float(np.max(np.abs(affine - ct.affine))) <= AFFINE_TOLERANCE_MM):
            try:
                data = decode_gz(proxy, compressed)
            except _READ_ERRORS:
                pass  # the ordinary read below names it
            else:
                if data.dtype.kind != "f" or np.all(np.isfinite(data)):
                    return _as_requested(data, np.uint8, subject, name)
    img = load_header(path, subject, name)
    check_same_grid(ct, img, subject, name)
    return read_data(img, np.uint8, subject, name)


def read_ct(img: nib.Nifti1Image, subject: str, name: str, hu_min: int, hu_max: int) -> np.ndarray:
    """CT values in Hounsfield units, clipped to [hu_min, hu_max], as int16."""
    data = read_data(img, np.int16, subject, name)
    return np.clip(data, hu_min, hu_max).astype(np.int16, copy=False)


def check_same_grid(ref: nib.Nifti1Image, img: nib.Nifti1Image, subject: str, name: str) -> None:
    """A mask must lie on its CT's voxel grid: same shape, affine equal within AFFINE_TOLERANCE_MM."""
    if tuple(img.shape) != tuple(ref.shape):
        raise InputError(subject, name, f"shape {tuple(img.shape)} differs from the CT's {tuple(ref.shape)}")
    diff = float(np.max(np.abs(img.affine - ref.affine)))
    if diff > AFFINE_TOLERANCE_MM:
        raise InputError(subject, name, f"affine differs from the CT's by {diff:.4g} mm (not on the CT's grid)")


def header_fields(header: nib.Nifti1Header) -> dict[str, Any]:
    """What a prediction must share with its CT besides the voxel grid, as JSON (kept in the subject's record,
    since the cache stores no NIfTI header): the qform and sform with their codes, units and pixdim."""
    qform, _ = header.get_qform(coded=True)  # None when its code is 0
    sform, _ = header.get_sform(coded=True)
    return {
        "qform": None if qform is None else qform.tolist(), "qform_code": int(header["qform_code"]),
        "sform": None if sform is None else sform.tolist(), "sform_code": int(header["sform_code"]),
        "xyzt_units": int(header["xyzt_units"]), "pixdim": [float(v) for v in header["pixdim"]],
    }

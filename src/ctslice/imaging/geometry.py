"""Where each cached pixel comes from: reorientation, in-plane resampling and centre crop/pad, recorded as one
matrix so that any cached slice maps back to the original voxel grid.

Cached volumes are (slice, row, column) arrays in LPS orientation: slices go from inferior to superior, rows
from anterior to posterior and columns from the patient's right to left, so `imshow(slice)` shows the usual
radiological view. Resampling is in-plane only (slices are never interpolated) and aligns the first voxel
centres, so output pixel i samples input coordinate i * target / spacing.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

import nibabel as nib
import numpy as np
from nibabel import orientations as ornt
from scipy import ndimage

CACHE_AXCODES = ("L", "P", "S")  # of the (x, y, z) volume before it is transposed to (slice, row, column)


@dataclass(frozen=True)
class Geometry:
    """Everything needed to map a cached slice back to the subject's original NIfTI grid."""

    original_shape: tuple[int, int, int]
    original_affine: tuple[tuple[float, ...], ...]
    original_axcodes: str
    """Orientation of the source file, e.g. 'RAS' (the cache is always LPS)."""
    spacing: tuple[float, float, float]
    """Cached voxel size in mm: (slice thickness, row spacing, column spacing)."""
    resampled_shape: tuple[int, int]
    """In-plane (rows, columns) after resampling, before crop/pad."""
    offset: tuple[int, int]
    """Where resampled pixel (0, 0) lands in the cached slice: > 0 padded, < 0 cropped."""
    shape: tuple[int, int, int]
    """Cached (slices, rows, columns)."""
    cache_to_original: tuple[tuple[float, ...], ...]
    """4x4: cached index (slice, row, column, 1) -> original voxel index (i, j, k, 1)."""

    @property
    def cache_affine(self) -> np.ndarray:
        """4x4: cached index (slice, row, column, 1) -> world coordinates in mm (the source's RAS+ frame)."""
        return np.asarray(self.original_affine) @ np.asarray(self.cache_to_original)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Geometry:
        return cls(**{k: _tuples(v) for k, v in data.items() if k in cls.__dataclass_fields__})


def _tuples(value):
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def _matrix(a: np.ndarray) -> tuple[tuple[float, ...], ...]:
    return tuple(tuple(float(x) for x in row) for row in a)


def plan_geometry(shape: tuple[int, ...], affine: np.ndarray, spacing: float | None, size: int) -> Geometry:
    """Decide how a volume of this shape and affine is put on the cache grid (no voxel data needed)."""
    shape = tuple(int(s) for s in shape)
    transform = ornt.ornt_transform(ornt.io_orientation(affine), ornt.axcodes2ornt(CACHE_AXCODES))
    canonical_to_original = ornt.inv_ornt_aff(transform, shape)  # canonical (x, y, z) index -> original index
    canonical_affine = affine @ canonical_to_original
    sx, sy, sz = np.linalg.norm(canonical_affine[:3, :3], axis=0)
    canonical_shape = ornt.apply_orientation(np.empty(shape, dtype=np.bool_), transform).shape
    nx, ny, nz = canonical_shape
    tx, ty = (sx, sy) if spacing is None else (spacing, spacing)
    rx, ry = tx / sx, ty / sy  # input pixels per output pixel
    resampled = (max(1, round(ny / ry)), max(1, round(nx / rx)))
    offset = ((size - resampled[0]) // 2, (size - resampled[1]) // 2)
    # cached (slice, row, column) -> canonical (x, y, z)
    to_canonical = np.array(
        [[0, 0, rx, -offset[1] * rx], [0, ry, 0, -offset[0] * ry], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=float
    )
    return Geometry(
        original_shape=shape,
        original_affine=_matrix(affine),
        original_axcodes="".join(nib.aff2axcodes(affine)),
        spacing=(float(sz), float(ty), float(tx)),
        resampled_shape=resampled,
        offset=offset,
        shape=(nz, size, size),
        cache_to_original=_matrix(canonical_to_original @ to_canonical),
    )


def _reorient(volume: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Original (i, j, k) array -> (slice, row, column) in the cache orientation (a view, no copy)."""
    transform = ornt.ornt_transform(ornt.io_orientation(affine), ornt.axcodes2ornt(CACHE_AXCODES))
    return ornt.apply_orientation(volume, transform).transpose(2, 1, 0)


def _resample_in_plane(volume: np.ndarray, geometry: Geometry, order: int, threads: int = 1) -> np.ndarray:
    """Each slice resampled on its own (on `threads` threads: scipy releases the GIL). Linear interpolation
    (order > 0) is rounded to the nearest integer of the volume's integer dtype slice by slice (np.rint of the
    float32 result, then numpy's cast, as astype casts), so no float copy of the volume is ever made."""
    ry, rx = _scale(geometry, axis=1), _scale(geometry, axis=2)
    out_shape = (volume.shape[0], *geometry.resampled_shape)
    if out_shape == volume.shape and abs(ry - 1.0) < 1e-9 and abs(rx - 1.0) < 1e-9:
        return volume  # native spacing: nothing to interpolate
    out = np.empty(out_shape, dtype=volume.dtype)
    matrix = np.array([ry, rx])

    def one_slice(z: int) -> None:
        if order == 0:
            ndimage.affine_transform(volume[z], matrix, output_shape=out_shape[1:], output=out[z], order=0,
                                     mode="nearest")
            return
        interpolated = np.empty(out_shape[1:], dtype=np.float32)
        ndimage.affine_transform(volume[z], matrix, output_shape=out_shape[1:], output=interpolated, order=order,
                                 mode="nearest")
        out[z] = np.rint(interpolated, out=interpolated)

    if threads <= 1:
        for z in range(out_shape[0]):
            one_slice(z)
    else:
        with ThreadPoolExecutor(threads, thread_name_prefix="ctslice-resample") as pool:
            for _ in pool.map(one_slice, range(out_shape[0])):  # re-raises a slice's error
                pass
    return out


def _scale(geometry: Geometry, axis: int) -> float:
    """Input pixels per output pixel along a cached in-plane axis (1 = rows, 2 = columns)."""
    return float(np.linalg.norm(np.asarray(geometry.cache_to_original)[:3, axis]))


def _crop_or_pad(volume: np.ndarray, geometry: Geometry, fill: int) -> np.ndarray:
    out = np.full(geometry.shape, fill, dtype=volume.dtype)
    src, dst = [slice(None)], [slice(None)]
    for axis, off in zip((1, 2), geometry.offset):
        n_in, n_out = volume.shape[axis], geometry.shape[axis]
        start_in, start_out = max(0, -off), max(0, off)
        length = min(n_in - start_in, n_out - start_out)
        src.append(slice(start_in, start_in + max(0, length)))
        dst.append(slice(start_out, start_out + max(0, length)))
    out[tuple(dst)] = volume[tuple(src)]
    return out


def image_to_cache(volume: np.ndarray, geometry: Geometry, fill: int, threads: int = 1) -> np.ndarray:
    """CT volume (original grid, int16) -> cached int16 volume; linear in-plane interpolation."""
    affine = np.asarray(geometry.original_affine)
    resampled = _resample_in_plane(_reorient(volume, affine), geometry, order=1, threads=threads)
    if resampled.dtype != np.int16:
        resampled = np.rint(resampled).astype(np.int16)
    return _crop_or_pad(resampled, geometry, fill)


def labels_to_cache(volume: np.ndarray, geometry: Geometry, threads: int = 1) -> tuple[np.ndarray, int]:
    """Label volume (original grid) -> cached uint8 volume with nearest-neighbour resampling (never invents a
    label), and the number of labelled voxels the crop removed."""
    affine = np.asarray(geometry.original_affine)
    resampled = _resample_in_plane(_reorient(volume, affine), geometry, order=0, threads=threads)
    cached = _crop_or_pad(resampled, geometry, 0)
    cropped = int(np.count_nonzero(resampled)) - int(np.count_nonzero(cached))
    return cached, cropped


def canonical_shape(geometry: Geometry) -> tuple[int, int, int]:
    """Shape (slices, rows, columns) of the original volume in the cache orientation, before in-plane resampling."""
    affine = np.asarray(geometry.original_affine)
    transform = ornt.ornt_transform(ornt.io_orientation(affine), ornt.axcodes2ornt(CACHE_AXCODES))
    xyz = [0, 0, 0]
    for axis, (target, _) in enumerate(transform):
        xyz[int(target)] = geometry.original_shape[axis]
    return (xyz[2], xyz[1], xyz[0])


def from_cache_orientation(volume: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Inverse of the reorientation alone: a (slice, row, column) volume of `canonical_shape` -> the original
    (i, j, k) grid (a view, no copy)."""
    affine = np.asarray(geometry.original_affine)
    transform = ornt.ornt_transform(ornt.axcodes2ornt(CACHE_AXCODES), ornt.io_orientation(affine))
    return ornt.apply_orientation(volume.transpose(2, 1, 0), transform)


def in_plane_cache_coordinates(geometry: Geometry) -> tuple[np.ndarray, np.ndarray]:
    """Cached (row, column) coordinates that each pixel of the original in-plane grid (canonical rows y, columns
    x) samples: row = y / ry + offset_row, column = x / rx + offset_column (the inverse of the resampling)."""
    _, ny, nx = canonical_shape(geometry)
    ry, rx = _scale(geometry, axis=1), _scale(geometry, axis=2)
    return np.arange(ny) / ry + geometry.offset[0], np.arange(nx) / rx + geometry.offset[1]

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


def _to_cache_grid(volume: np.ndarray, geometry: Geometry, order: int, dtype: type, fill: int, threads: int = 1,
                   count_cropped: bool = False) -> tuple[np.ndarray, int]:
    """A reoriented (slice, row, column) volume resampled in-plane and centre-cropped or padded onto the cache grid,
    and (with count_cropped) the nonzero voxels the crop removed. Slice by slice, on `threads` threads (numpy
    releases the GIL), each slice's kept window computed straight into the output (no float or uncropped copy of
    the volume). Values are those of scipy.ndimage.affine_transform(slice, (ry, rx), order=order, mode="nearest")
    into float32 (order 1) or the input's dtype (order 0), rounded with np.rint and cast as astype casts: see
    `_linear_taps` for why they are equal bit for bit."""
    ry, rx = _scale(geometry, axis=1), _scale(geometry, axis=2)
    resampled_shape = tuple(geometry.resampled_shape)
    native = volume.shape[1:] == resampled_shape and abs(ry - 1.0) < 1e-9 and abs(rx - 1.0) < 1e-9
    src, dst = _window(resampled_shape, geometry)
    covers = all(w.stop - w.start == n for w, n in zip(dst, geometry.shape[1:]))
    cropped_any = any(w.stop - w.start < n for w, n in zip(src, resampled_shape))
    out = np.empty(geometry.shape, dtype=dtype)  # each slice filled by its thread, while it is in the CPU's cache
    n_rows, n_cols = volume.shape[1:]
    if native:
        rows, cols = np.arange(src[0].start, src[0].stop), np.arange(src[1].start, src[1].stop)
    elif order == 0:
        rows, cols = _nearest_taps(src[0], n_rows, ry), _nearest_taps(src[1], n_cols, rx)
        # the whole resampled slice, only to count the labelled voxels the crop removes
        all_rows, all_cols = (_nearest_taps(slice(0, n), n_in, r)
                              for n, n_in, r in zip(resampled_shape, (n_rows, n_cols), (ry, rx)))
    elif count_cropped:
        raise ValueError("count_cropped is for labels (order 0)")
    else:
        rows, cols = _linear_taps(src[0], n_rows, ry), _linear_taps(src[1], n_cols, rx)

    def one_slice(z: int) -> int:
        if not covers:
            out[z].fill(fill)
        window = out[z][dst]
        if native or order == 0:
            picked = volume[z].take(rows, axis=0).take(cols, axis=1)  # 6x faster than [rows[:, None], cols]
            window[...] = np.rint(picked) if picked.dtype.kind == "f" else picked
        else:
            _linear_slice(volume[z], rows, cols, window)
        if not (count_cropped and cropped_any):
            return 0
        whole = volume[z] if native else volume[z].take(all_rows, axis=0).take(all_cols, axis=1)
        return int(np.count_nonzero(whole)) - int(np.count_nonzero(window))

    if threads <= 1:
        return out, sum(map(one_slice, range(volume.shape[0])))
    with ThreadPoolExecutor(threads, thread_name_prefix="ctslice-resample") as pool:
        return out, sum(pool.map(one_slice, range(volume.shape[0])))  # re-raises a slice's error


LinearTaps = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
"""Along one axis, for each output pixel: the two input pixels it blends and their weights (i0, i1, w0, w1)."""

ROWS_PER_BLOCK = 32  # a block of rows in float64 stays in the CPU's L2 cache: 2x faster than whole slices


def _linear_taps(kept: slice, n_in: int, scale: float) -> LinearTaps:
    """The taps of output pixels kept.start..kept.stop-1 along an axis zoomed by `scale` input pixels per output
    pixel, computed as scipy.ndimage's zoom_shift does for affine_transform with a diagonal matrix, order 1 and
    mode 'nearest' (ni_interpolation.c, ni_splines.c): c = k * scale, i0 = floor(c), i1 = i0 + 1, both clamped to the
    edge, w0 = 1 - (c - floor(c)), w1 = 1 - w0. Only the kept pixels are computed: each depends on its own k."""
    c = np.arange(kept.start, kept.stop, dtype=np.float64) * scale
    start = np.floor(c)
    w0 = 1.0 - (c - start)
    i0 = start.astype(np.intp)
    return np.clip(i0, 0, n_in - 1), np.clip(i0 + 1, 0, n_in - 1), w0, 1.0 - w0


def _nearest_taps(kept: slice, n_in: int, scale: float) -> np.ndarray:
    """The input pixel of each kept output pixel with order 0 (scipy: floor(k * scale + 0.5), clamped)."""
    c = np.arange(kept.start, kept.stop, dtype=np.float64) * scale
    return np.clip(np.floor(c + 0.5).astype(np.intp), 0, n_in - 1)


def _linear_slice(plane: np.ndarray, rows: LinearTaps, cols: LinearTaps, out: np.ndarray) -> None:
    """Bilinear resampling of one slice into `out` (the kept window), separably but with scipy's arithmetic to the
    bit: scipy sums t = 0 + v00*wy0*wx0 + v01*wy0*wx1 + v10*wy1*wx0 + v11*wy1*wx1 in double, left to right, each
    product as (v * wy) * wx, then stores float32(t). Here (v * wy) is computed once per input row and blended
    along the columns in the same order, so every value is the same double (no fused multiply-add in numpy);
    then np.rint in float32 and the cast to the output type, as before. An axis whose positions all fall on input
    pixels (w1 = 0 everywhere: the target spacing equals the source's) skips its second tap, whose products are
    +-0 and leave each finite sum unchanged."""
    y0, y1, wy0, wy1 = rows
    x0, x1, wx0, wx1 = cols
    both_rows, both_cols = bool(np.any(wy1)), bool(np.any(wx1))
    n = min(ROWS_PER_BLOCK, len(y0))
    r0, r1 = np.empty((n, plane.shape[1])), np.empty((n, plane.shape[1]))
    t, u = np.empty((n, len(x0))), np.empty((n, len(x0)))
    for a in range(0, len(y0), ROWS_PER_BLOCK):
        b = min(a + ROWS_PER_BLOCK, len(y0))
        m = b - a
        terms = [np.multiply(plane[y0[a:b]], wy0[a:b, None], out=r0[:m])]
        if both_rows:
            terms.append(np.multiply(plane[y1[a:b]], wy1[a:b, None], out=r1[:m]))
        first = True
        for r in terms:
            for xi, wx in ((x0, wx0), (x1, wx1)) if both_cols else ((x0, wx0),):
                dest = t[:m] if first else u[:m]
                np.take(r, xi, axis=1, out=dest)
                dest *= wx
                if not first:
                    t[:m] += dest
                first = False
        out[a:b] = np.rint(t[:m].astype(np.float32))


def _window(resampled_shape: tuple[int, int], geometry: Geometry) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
    """(rows, columns) of a resampled slice that the cache keeps, and where they go in the cached slice."""
    src, dst = [], []
    for n_in, n_out, off in zip(resampled_shape, geometry.shape[1:], geometry.offset):
        start_in, start_out = max(0, -off), max(0, off)
        length = max(0, min(n_in - start_in, n_out - start_out))
        src.append(slice(start_in, start_in + length))
        dst.append(slice(start_out, start_out + length))
    return (src[0], src[1]), (dst[0], dst[1])


def _scale(geometry: Geometry, axis: int) -> float:
    """Input pixels per output pixel along a cached in-plane axis (1 = rows, 2 = columns)."""
    return float(np.linalg.norm(np.asarray(geometry.cache_to_original)[:3, axis]))


def image_to_cache(volume: np.ndarray, geometry: Geometry, fill: int, threads: int = 1) -> np.ndarray:
    """CT volume (original grid, int16) -> cached int16 volume; linear in-plane interpolation."""
    affine = np.asarray(geometry.original_affine)
    return _to_cache_grid(_reorient(volume, affine), geometry, order=1, dtype=np.int16, fill=fill,
                          threads=threads)[0]


def labels_to_cache(volume: np.ndarray, geometry: Geometry, threads: int = 1) -> tuple[np.ndarray, int]:
    """Label volume (original grid) -> cached uint8 volume with nearest-neighbour resampling (never invents a
    label), and the number of labelled voxels the crop removed."""
    affine = np.asarray(geometry.original_affine)
    return _to_cache_grid(_reorient(volume, affine), geometry, order=0, dtype=volume.dtype, fill=0, threads=threads,
                          count_cropped=True)


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

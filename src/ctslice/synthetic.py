"""Deterministic synthetic CT dataset in the TotalSegmentator v2 layout.

Used as the demo dataset, in tests (tiny volumes) and in benchmarks (512x512)::

    OUT/<subject_id>/ct.nii.gz                         int16 HU, 3D
    OUT/<subject_id>/segmentations/<structure>.nii.gz  uint8 masks 0/1 (same shape/affine)
    OUT/meta.csv                                       image_id;age;gender;split

Geometry is defined in canonical RAS voxel order (axis 0 -> patient Right,
axis 1 -> Anterior, axis 2 -> Superior) as fractions of the volume, so the body
always fits the field of view. Every third subject (index % 3 == 1) is stored
LPS-like: axes 0 and 1 flipped in the data and negated in the affine, with the
same world coordinates. Shapes are rasterised on bounding boxes only, and the
writer builds one mask at a time, so memory stays at ~one CT volume plus one mask.
"""

from __future__ import annotations

import csv
import io
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import nibabel as nib
import numpy as np

from .files import write_atomic

DEFAULT_STRUCTURES: tuple[str, ...] = (
    "spleen", "kidney_right", "kidney_left", "gallbladder", "liver", "stomach",
    "pancreas", "aorta", "inferior_vena_cava", "lung_upper_lobe_left",
    "lung_lower_lobe_right", "vertebrae_L1", "heart", "urinary_bladder",
)  # fmt: skip

# name -> (centre xyz, radii xyz, HU or None, z-clip (lo, hi) or None, anchor or None).
# Fractions of the volume (x: 0 = patient left, y: 0 = posterior, z: 0 = inferior).
# With an anchor, centre is an offset in units of the anchor's radii and radii are
# factors of them (no own jitter). HU None: not painted (background anatomy shows).
# Names starting with "_" are background anatomy, never written as masks.
_Vec = tuple[float, float, float]
_Entry = tuple[_Vec, _Vec, float | None, tuple[float, float] | None, str | None]
_CATALOGUE: dict[str, _Entry] = {
    "_lung_left": ((0.32, 0.50, 0.84), (0.13, 0.17, 0.24), -850, None, None),
    "_lung_right": ((0.68, 0.50, 0.84), (0.13, 0.17, 0.24), -850, None, None),
    "_spine": ((0.50, 0.31, 0.50), (0.06, 0.05, 50.0), None, None, None),
    "liver": ((0.64, 0.52, 0.52), (0.17, 0.16, 0.13), 60, None, None),
    # Deliberate overlaps: gallbladder sits on the liver's edge, IVC runs through it.
    "gallbladder": ((-0.35, 0.6, -0.6), (0.28, 0.28, 0.45), 10, None, "liver"),
    "inferior_vena_cava": ((0.57, 0.43, 0.40), (0.035, 0.035, 0.25), 140, None, None),
    "aorta": ((0.46, 0.42, 0.50), (0.035, 0.035, 0.42), 200, None, None),
    "spleen": ((0.29, 0.42, 0.55), (0.07, 0.08, 0.08), 50, None, None),
    "stomach": ((0.38, 0.60, 0.56), (0.09, 0.08, 0.08), 25, None, None),
    "pancreas": ((0.45, 0.49, 0.47), (0.10, 0.03, 0.04), 45, None, None),
    "kidney_right": ((0.64, 0.36, 0.42), (0.05, 0.05, 0.08), 150, None, None),
    "kidney_left": ((0.36, 0.36, 0.43), (0.05, 0.05, 0.08), 150, None, None),
    "heart": ((0.44, 0.60, 0.70), (0.11, 0.09, 0.09), 120, None, None),
    "esophagus": ((0.48, 0.40, 0.75), (0.02, 0.02, 0.22), 40, None, None),
    "small_bowel": ((0.45, 0.62, 0.28), (0.14, 0.10, 0.10), 40, None, None),
    "colon": ((0.50, 0.55, 0.22), (0.25, 0.12, 0.06), -50, None, None),
    "urinary_bladder": ((0.50, 0.56, 0.08), (0.08, 0.07, 0.07), 10, None, None),
    "lung_upper_lobe_left": ((0, 0, 0), (1, 1, 1), None, (0.80, 1.0), "_lung_left"),
    "lung_lower_lobe_left": ((0, 0, 0), (1, 1, 1), None, (0.0, 0.80), "_lung_left"),
    "lung_upper_lobe_right": ((0, 0, 0), (1, 1, 1), None, (0.88, 1.0), "_lung_right"),
    "lung_middle_lobe_right": ((0, 0, 0), (1, 1, 1), None, (0.78, 0.88), "_lung_right"),
    "lung_lower_lobe_right": ((0, 0, 0), (1, 1, 1), None, (0.0, 0.78), "_lung_right"),
}
_VERTEBRAE = ("L5", "L4", "L3", "L2", "L1", "T12", "T11", "T10", "T9", "T8")  # bottom -> top
_DISC = 0.015  # fraction of z at the top of each vertebra that is intervertebral disc
_CATALOGUE.update({  # stacked segments of the spine column, discs in between
    f"vertebrae_{v}": ((0, 0, 0), (1, 1, 1), None, (k / len(_VERTEBRAE), (k + 1) / len(_VERTEBRAE) - _DISC),
                       "_spine")
    for k, v in enumerate(_VERTEBRAE)
})  # fmt: skip
_BACKGROUND = ("_lung_left", "_lung_right")  # painted before organs; spine painted last
_NAME_RE = re.compile(r"^[A-Za-z0-9_]+$")


@dataclass(frozen=True)
class DemoSpec:
    """Parameters of the synthetic dataset (all ranges inclusive, drawn per subject)."""

    subjects: int = 8
    size: int = 64  # in-plane voxels (square)
    slices: tuple[int, int] = (16, 32)  # min/max slice count
    spacing_mm: tuple[float, float] = (4.0, 6.0)  # in-plane spacing range
    slice_thickness_mm: tuple[float, float] = (2.5, 5.0)
    structures: tuple[str, ...] = DEFAULT_STRUCTURES
    missing_mask_fraction: float = 0.1  # P(a structure's mask file is absent); never all
    seed: int = 0
    meta_csv: bool = True
    test_fraction: float = 0.0  # rest is split train/val ~80/20

    def __post_init__(self) -> None:
        if self.subjects < 0:
            raise ValueError(f"subjects must be >= 0, got {self.subjects}")
        if self.size < 4:
            raise ValueError(f"size must be >= 4 voxels, got {self.size}")
        if not 1 <= self.slices[0] <= self.slices[1]:
            raise ValueError(f"need 1 <= min slices <= max slices, got {self.slices}")
        for lo, hi in (self.spacing_mm, self.slice_thickness_mm):
            if not 0 < lo <= hi:
                raise ValueError(f"bad spacing range ({lo}, {hi})")
        if not (0 <= self.missing_mask_fraction <= 1 and 0 <= self.test_fraction <= 1):
            raise ValueError("fractions must lie in [0, 1]")
        if not self.structures or len(set(self.structures)) != len(self.structures):
            raise ValueError("structures must be non-empty and unique")
        bad = [s for s in self.structures if not _NAME_RE.match(s) or s.startswith("_")]
        if bad:
            raise ValueError(f"invalid structure names: {bad}")


@dataclass(frozen=True)
class _Ellipsoid:
    centre: tuple[float, float, float]  # voxel coordinates (stored order)
    radii: tuple[float, float, float]  # voxels
    hu: float | None
    zrange: tuple[int, int]  # voxel slab [lo, hi) the shape is clipped to


@dataclass(frozen=True)
class _Plan:
    shape: tuple[int, int, int]
    affine: np.ndarray
    lps: bool
    body: tuple[float, float, float, float]  # semi-axes a, b (fractions), z phases
    noise_sigma: float
    shapes: dict[str, _Ellipsoid]


def subject_id(index: int) -> str:
    """Subject id of the index-th subject: ``demo0000``, ``demo0001``, ..."""
    return f"demo{index:04d}"


def _rng(spec: DemoSpec, index: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([spec.seed, index, stream])


def _geometry(name: str, spec: DemoSpec, index: int, shape: tuple[int, int, int],
              body: tuple[float, ...], cache: dict[str, _Ellipsoid]) -> _Ellipsoid:  # fmt: skip
    """Ellipsoid of one structure in voxel units (anchors resolved via ``cache``)."""
    if name in cache:  # anchors (liver, lungs, spine) are shared
        return cache[name]
    rng = _rng(spec, index, 1000 + zlib.crc32(name.encode()))  # stable per name
    n = np.asarray(shape, dtype=np.float64)
    entry = _CATALOGUE.get(name)
    if entry is None:  # unknown (official) name: generic small organ inside the abdomen
        entry = (tuple(rng.uniform((0.35, 0.42, 0.15), (0.65, 0.60, 0.85))),
                 tuple(rng.uniform((0.03, 0.03, 0.04), (0.06, 0.06, 0.10))),
                 float(rng.uniform(20, 80)), None, None)  # fmt: skip
    centre_f, radii_f, hu, zclip, anchor = entry
    if anchor is not None:
        a = _geometry(anchor, spec, index, shape, body, cache)
        centre = np.asarray(a.centre) + np.asarray(centre_f) * np.asarray(a.radii)
        radii = np.asarray(radii_f) * np.asarray(a.radii)
    else:  # jitter, then scale the layout to this subject's body outline
        scale = np.array([body[0] / 0.40, body[1] / 0.30, 1.0])
        c = 0.5 + (np.asarray(centre_f) - 0.5) * scale + rng.uniform(-0.02, 0.02, 3)
        centre = c * n - 0.5
        radii = np.asarray(radii_f) * scale * rng.uniform(0.85, 1.15, 3) * n
        hu = None if hu is None else float(hu) + float(rng.uniform(-10, 10))
    nz = shape[2]  # a clip [lo, hi) keeps the slices whose centre lies in it (>= 1 slice)
    lo, hi = (0.0, 1.0) if zclip is None else zclip
    zlo = min(max(int(np.ceil(lo * nz - 0.5)), 0), nz - 1)
    zr = (zlo, max(min(int(np.ceil(hi * nz - 0.5)), nz), zlo + 1))
    geo = _Ellipsoid(tuple(centre.tolist()), tuple(np.maximum(radii, 0.75).tolist()), hu, zr)
    cache[name] = geo
    return geo


def _plan(spec: DemoSpec, index: int) -> _Plan:
    """Everything about subject ``index`` except voxel data: shape, affine, shapes."""
    rng = _rng(spec, index, 0)
    nz = int(rng.integers(spec.slices[0], spec.slices[1] + 1))
    sxy = round(float(rng.uniform(*spec.spacing_mm)), 3)
    sz = round(float(rng.uniform(*spec.slice_thickness_mm)), 3)
    body = (float(rng.uniform(0.38, 0.44)), float(rng.uniform(0.27, 0.33)),
            float(rng.uniform(0, 2 * np.pi)), float(rng.uniform(0, 2 * np.pi)))  # fmt: skip
    shape = (spec.size, spec.size, nz)
    cache: dict[str, _Ellipsoid] = {}
    names = (*_BACKGROUND, "_spine", *spec.structures)
    shapes = {nm: _geometry(nm, spec, index, shape, body, cache) for nm in names}
    lps = index % 3 == 1
    spacing = np.array([sxy, sxy, sz])
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = -(np.asarray(shape) - 1) / 2 * spacing
    if lps:  # flip axes 0/1 in data (mirror the shapes; the body is symmetric) and
        affine[:2, :2] *= -1  # negate them in the affine: world coordinates unchanged
        affine[:2, 3] *= -1
        mirror = np.array([shape[0] - 1, shape[1] - 1, 0.0]), np.array([-1.0, -1.0, 1.0])
        shapes = {nm: replace(g, centre=tuple((mirror[0] + mirror[1] * g.centre).tolist()))
                  for nm, g in shapes.items()}  # fmt: skip
    return _Plan(shape, affine, lps, body, float(rng.uniform(10, 20)), shapes)


def _region(geo: _Ellipsoid, shape: tuple[int, int, int]) -> tuple[tuple[slice, ...], np.ndarray]:
    """Bounding box slices and boolean mask of an ellipsoid; never empty."""
    c, r = geo.centre, geo.radii
    bounds = [(0, shape[0]), (0, shape[1]), geo.zrange]
    lims = [(max(lo, int(np.ceil(c[i] - r[i]))), min(hi, int(np.floor(c[i] + r[i])) + 1))
            for i, (lo, hi) in enumerate(bounds)]  # fmt: skip
    if all(lo < hi for lo, hi in lims):
        d = [((np.arange(lo, hi, dtype=np.float32) - np.float32(c[i])) / np.float32(r[i])) ** 2
             for i, (lo, hi) in enumerate(lims)]  # fmt: skip
        inside = d[0][:, None, None] + d[1][None, :, None] + d[2][None, None, :] <= 1.0
        if inside.any():
            return tuple(slice(lo, hi) for lo, hi in lims), inside
    # Too small for the grid (tiny test volumes): fall back to the nearest voxel.
    v = [min(max(int(round(c[i])), lo), hi - 1) for i, (lo, hi) in enumerate(bounds)]
    return tuple(slice(x, x + 1) for x in v), np.ones((1, 1, 1), dtype=bool)


def _render_ct(plan: _Plan, spec: DemoSpec, index: int) -> np.ndarray:
    """Body layers, lungs, organs, spine (bone/discs), then noise; int16 HU."""
    nx, ny, nz = plan.shape
    ct = np.full(plan.shape, -1000, dtype=np.int16, order="F")  # NIfTI order
    x = ((np.arange(nx, dtype=np.float32) + 0.5) / nx - 0.5)[:, None]
    y = ((np.arange(ny, dtype=np.float32) + 0.5) / ny - 0.5)[None, :]
    a0, b0, pa, pb = plan.body
    lut = np.array([-1000, -100, 50, -20], dtype=np.int16)  # air, fat, muscle, viscera
    for k in range(nz):  # body outline varies slightly along z
        t = 2 * np.pi * (k + 0.5) / nz
        a, b = a0 * (1 + 0.04 * np.sin(t + pa)), b0 * (1 + 0.04 * np.sin(t + pb))
        u = (x / a) ** 2 + (y / b) ** 2
        ct[:, :, k] = lut[(u <= 1.0).astype(np.int8) + (u <= 0.88**2) + (u <= 0.80**2)]
    order = list(_CATALOGUE)  # lungs first, then organs in catalogue order, unknown last
    for name in sorted(plan.shapes, key=lambda nm: order.index(nm) if nm in order else len(order)):
        geo = plan.shapes[name]
        if geo.hu is not None:
            box, inside = _region(geo, plan.shape)
            ct[box][inside] = int(round(geo.hu))
    box, inside = _region(plan.shapes["_spine"], plan.shape)  # bone over everything
    cz = (np.arange(box[2].start, box[2].stop) + 0.5) / nz
    disc = (cz * len(_VERTEBRAE)) % 1.0 >= 1.0 - _DISC * len(_VERTEBRAE)
    c, r = plan.shapes["_spine"].centre, plan.shapes["_spine"].radii
    sx = ((np.arange(box[0].start, box[0].stop) - c[0]) / r[0])[:, None] ** 2
    sy = ((np.arange(box[1].start, box[1].stop) - c[1]) / r[1])[None, :] ** 2
    cortex = ((sx + sy) > 0.7**2)[:, :, None]
    bone = np.where(cortex, 900, 350).astype(np.int16) + np.zeros(inside.shape, np.int16)
    bone[:, :, disc] = 80
    ct[box][inside] = bone[inside]
    rng = _rng(spec, index, 1)
    for k in range(nz):  # Gaussian noise, slice by slice (bounded float32 memory)
        noisy = ct[:, :, k] + plan.noise_sigma * rng.standard_normal((nx, ny), dtype=np.float32)
        ct[:, :, k] = np.clip(np.rint(noisy), -1024, 3071).astype(np.int16)
    return ct


def _render_mask(plan: _Plan, name: str) -> np.ndarray:
    mask = np.zeros(plan.shape, dtype=np.uint8, order="F")
    box, inside = _region(plan.shapes[name], plan.shape)
    mask[box][inside] = 1
    return mask


def missing_structures(spec: DemoSpec, index: int) -> frozenset[str]:
    """Structures whose mask file is not written for subject ``index`` (never all)."""
    u = _rng(spec, index, 2).random(len(spec.structures))
    missing = {s for s, p in zip(spec.structures, u) if p < spec.missing_mask_fraction}
    if len(missing) == len(spec.structures):
        missing.discard(spec.structures[int(np.argmax(u))])
    return frozenset(missing)


def synthetic_subject(
    spec: DemoSpec, index: int
) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """Build one subject in memory: (int16 CT, {structure: uint8 0/1 mask}, 4x4 affine).

    Pure and deterministic. Masks are returned for every structure in
    ``spec.structures`` (see :func:`missing_structures` for the files the writer
    omits). Holds all masks at once, so prefer tiny sizes here.
    """
    plan = _plan(spec, index)
    masks = {name: _render_mask(plan, name) for name in spec.structures}
    return _render_ct(plan, spec, index), masks, plan.affine.copy()


def _save_nifti(data: np.ndarray, affine: np.ndarray, path: Path) -> None:
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm")
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    write_atomic(path, lambda tmp: nib.save(img, tmp), durable=False, suffix=".nii.gz")  # demo data: made again


def _splits(spec: DemoSpec) -> list[str]:
    n = spec.subjects
    n_test = min(n, int(round(spec.test_fraction * n)))
    rest = n - n_test
    n_val = int(round(0.2 * rest))
    if n >= 2 and rest >= 2:
        n_val = max(n_val, 1)
    n_val = min(n_val, max(rest - 1, 0))  # keep at least one train subject
    order = np.random.default_rng([spec.seed, 0x5EED]).permutation(n)
    split = ["train"] * n
    for rank, i in enumerate(order):
        split[i] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    return split


def generate_demo_dataset(out: Path, spec: DemoSpec = DemoSpec(),  # frozen: safe default
                          progress: Callable[[int, int], None] | None = None) -> list[str]:  # fmt: skip
    """Write the dataset under ``out`` and return the subject ids.

    Deterministic: the same spec gives byte-identical files. Mask files that
    are "missing" for a subject are removed if left over from an earlier run.
    ``progress(done, total)`` is called after each subject.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ids, rows, splits = [], [], _splits(spec)
    for index in range(spec.subjects):
        sid = subject_id(index)
        seg = out / sid / "segmentations"
        seg.mkdir(parents=True, exist_ok=True)
        plan = _plan(spec, index)
        _save_nifti(_render_ct(plan, spec, index), plan.affine, out / sid / "ct.nii.gz")
        missing = missing_structures(spec, index)
        for name in spec.structures:  # one mask in memory at a time
            path = seg / f"{name}.nii.gz"
            if name in missing:
                path.unlink(missing_ok=True)
            else:
                _save_nifti(_render_mask(plan, name), plan.affine, path)
        rng = _rng(spec, index, 3)
        rows.append((sid, int(rng.integers(18, 90)), "mf"[int(rng.integers(2))], splits[index]))
        ids.append(sid)
        if progress is not None:
            progress(index + 1, spec.subjects)
    if spec.meta_csv:
        text = io.StringIO(newline="")
        writer = csv.writer(text, delimiter=";")
        writer.writerow(("image_id", "age", "gender", "split"))
        writer.writerows(rows)
        write_atomic(out / "meta.csv", text.getvalue(), durable=False)
    return ids

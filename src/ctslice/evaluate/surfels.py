"""Surface elements ("surfels") of a 3D mask as DeepMind's surface-distance defines them (Nikolov et al. 2021), the
surface that the published normalised surface Dice measures. Pure functions of arrays.

    codes = neighbour_codes(mask)          # (n0+1, n1+1, n2+1) uint8, one per corner of the voxel grid
    area = surfel_area_table(spacing)[codes]  # mm^2 of surface inside each 2x2x2 neighbourhood

The surface lives on the corner grid: a corner sees the 8 voxels around it (outside the volume counts as
background) and their inside/outside pattern is an 8-bit code, weighted 128 for voxel (i-1, j-1, k-1) down to 1
for voxel (i, j, k) as DeepMind's kernel [[[128, 64], [32, 16]], [[8, 4], [2, 1]]] does. A corner whose code is
neither 0 nor 255 is a surfel; its area is that of the marching-cubes triangles of its code, each triangle's area
vector (a, b, c) (in voxel units) scaled to (a*s1*s2, b*s0*s2, c*s0*s1) mm^2 for spacing (s0, s1, s2).

The triangles are DeepMind's table (`lookup_tables._NEIGHBOUR_CODE_TO_NORMALS`, Apache-2.0, the same table MONAI
uses for `use_subvoxels=True`), re-encoded here, not re-derived: its triangulation of the ambiguous cases is what
the field's numbers use, and a different marching-cubes triangulation would give other areas. Every triangle of
that table has one of nine area vectors (signs dropped, they do not change the area), one letter each, and the
table is symmetric (code c and 255 - c have the same triangles), so 128 short strings hold all of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

# letter -> |area vector| in units of 1/8 of a voxel face: x, y, z half faces normal to axis 0, 1, 2; X, Y, Z the
# triangles of a diagonal plane parallel to axis 0, 1, 2; c, d, e the triangles normal to a cube diagonal.
_VECTORS = {"x": (4, 0, 0), "y": (0, 4, 0), "z": (0, 0, 4), "X": (0, 2, 2), "Y": (2, 0, 2), "Z": (2, 2, 0),
            "c": (1, 1, 1), "d": (2, 2, 2), "e": (3, 3, 3)}

# Triangles of codes 0..127 (code 255 - c has those of c).
_TRIANGLES = (
    " c c ZZ c YY cc cdx c cc YY cdx ZZ cdx cdx xx c XX cc cdy cc cdz ccc ccdd cc XXc YYc XYce ZZc XZce ccdx cdx c"
    " cc XX cdy cc YYc XXc XYce cc ccc cdz ccdd ZZc ccdx XZce cdx ZZ cdy cdy yy ZZc YZce ccdy cdy ZZc ccdy YZce cdy"
    " ZZZZ ZZc ZZc ZZ c cc cc ZZc XX cdz XXc XZce cc ccc YYc ccdx cdy ccdd XYce cdx YY cdz YYc YZce cdz zz ccdz cdz"
    " YYc ccdz YYYY YYc YZce cdz YYc YY cc ccc XXc ccdy XXc ccdz XXXX XXc ccc cccc ccdz ccc ccdy ccc XXc cc cdx ccdd"
    " XYce cdy XZce cdz XXc XX ccdx ccc YYc cc ZZc cc cc c"
).split(" ")
assert len(_TRIANGLES) == 128

WEIGHTS = np.array([[[128, 64], [32, 16]], [[8, 4], [2, 1]]], dtype=np.uint8)
"""Bit of each voxel of a corner's 2x2x2 neighbourhood, indexed by its offset (0 = the lower voxel) on each axis."""


def surfel_area_table(spacing: Sequence[float]) -> np.ndarray:
    """float64 (256,), read-only: the surface area in mm^2 of each neighbourhood code at this voxel spacing (0 for
    codes 0 and 255). Each triangle's area is the norm of its scaled area vector, summed per code, as DeepMind
    sums them."""
    return _area_table(tuple(float(s) for s in spacing))


@lru_cache(maxsize=64)  # one table per spacing: a dataset has few
def _area_table(spacing: tuple[float, ...]) -> np.ndarray:
    s0, s1, s2 = spacing
    scale = np.array([s1 * s2, s0 * s2, s0 * s1]) / 8.0
    area = {letter: float(np.linalg.norm(np.array(v) * scale)) for letter, v in _VECTORS.items()}
    half = [sum(area[t] for t in triangles) for triangles in _TRIANGLES]
    table = np.array(half + half[::-1])
    table.setflags(write=False)
    return table


def neighbour_codes(mask: np.ndarray) -> np.ndarray:
    """uint8 code of every corner of a bool 3D mask's voxel grid (shape + 1 on each axis): the 2x2x2 voxels
    around the corner, outside the volume counting as background."""
    padded = np.pad(mask.astype(np.uint8), 1)
    n0, n1, n2 = (n + 1 for n in mask.shape)
    codes = np.zeros((n0, n1, n2), np.uint8)
    for a in (0, 1):
        for b in (0, 1):
            for c in (0, 1):
                codes |= padded[a:a + n0, b:b + n1, c:c + n2] * WEIGHTS[a, b, c]
    return codes

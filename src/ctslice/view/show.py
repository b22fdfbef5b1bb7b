"""`cache show`: a cached subject's CT with its labels as a coloured overlay and a legend of the structures
present, one slice or a montage of evenly spaced ones, written as a PNG.

matplotlib draws through its Agg canvas (`matplotlib.figure.Figure`, no pyplot): no display needed, and no
global backend switched under a caller that uses pyplot itself."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..cache.reader import CacheReader
from ..colors import label_color
from ..errors import CacheError, CtsliceError
from ..files import write_atomic
from ..text import first_few
from .overlay import even_positions, overlay_rgb, parse_axis, parse_window, plane_count, swatch, view

MONTAGE = 12  # slices in a montage (3 rows of 4)
LEGEND_ROWS = 40  # legend entries per column: 117 structures make 3 columns
SIDE = {"axial": "patient's right", "coronal": "patient's right", "sagittal": "anterior"}  # on the image's left


def legend_handles(labels: dict[int, str], present: set[int]):
    from matplotlib.patches import Patch

    return [Patch(color=swatch(np.array(label_color(i)) / 255), label=f"{i} {labels[i]}") for i in sorted(present)
            if i]


def _aspect(spacing: list[float], axis: str) -> float:
    """Height / width of a pixel in the displayed plane (slices are usually thicker than pixels are wide)."""
    thickness, row, column = spacing
    return {"axial": row / column, "coronal": thickness / column, "sagittal": thickness / row}[axis]


def png_path(out: Path | None, default_name: str) -> Path:
    """Where the PNG goes: `default_name` in the current folder, or in `out` when it is a folder; `out` itself
    with `.png` added when it has no suffix. Another suffix or a missing folder is a user error, said before
    anything is read."""
    if out is None:
        return Path(default_name)
    out = Path(out)
    if out.is_dir():
        return out / default_name
    if not out.suffix:
        out = out.with_name(out.name + ".png")
    elif out.suffix.lower() != ".png":
        raise CtsliceError(f"--out {out}: cache show writes PNG files; give a name ending in .png or a folder")
    if not out.parent.is_dir():
        raise CtsliceError(f"--out {out}: folder {out.parent} does not exist")
    if out.exists() and not out.is_file():
        raise CtsliceError(f"--out {out}: exists and is not a file")
    return out


def read_planes(reader: CacheReader, subject: str, axis: str, positions: list[int]
                ) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """(position, image plane, label plane) for each position, read through the checked reader (crc32c of every
    chunk; a damaged or missing chunk is a CacheError naming subject and slice)."""
    if axis == "axial":  # only the slices shown: one chunk each
        return [(p, reader.read_image(subject, [p])[0], reader.read_label(subject, p)) for p in positions]
    slices = int(reader.shapes[reader.subject_number(subject)][0])
    image = reader.read_image(subject, range(slices))
    label = np.stack([reader.read_label(subject, z) for z in range(slices)])
    return [(p, view(image, axis, p), view(label, axis, p)) for p in positions]


def show_subject(cache: Path, subject: str, out: Path | None = None, slice_: int | None = None,
                 axis: str = "axial", window: str = "soft") -> Path:
    """Write the PNG and return its path (default: `<subject>-<axis>[-<slice>].png` in the current folder, or
    in `out` when that is a folder)."""
    from matplotlib.figure import Figure

    axis, width_level = parse_axis(axis), parse_window(window)
    out = png_path(out, f"{subject}-{axis}" + (f"-{slice_}" if slice_ is not None else "") + ".png")
    reader = CacheReader(cache)
    manifest = reader.manifest
    record = manifest.subjects.get(subject)
    if record is None:
        known = first_few(sorted(manifest.subjects), 10)
        raise CacheError(f"{cache}: no subject {subject!r} in the cache (subjects: {known})")
    count = plane_count(tuple(record.shape), axis)
    if slice_ is not None and not 0 <= slice_ < count:
        raise CacheError(f"{subject}: {axis} slice {slice_} out of range (0..{count - 1})")
    positions = [slice_] if slice_ is not None else even_positions(count, MONTAGE)
    planes = read_planes(reader, subject, axis, positions)

    cols = min(4, len(planes))
    rows = math.ceil(len(planes) / cols)
    present = set().union(*(np.unique(lab).tolist() for _, _, lab in planes))
    legend = legend_handles(manifest.labels, present)
    legend_cols = max(1, math.ceil(len(legend) / LEGEND_ROWS))
    panel = 3.2 if len(planes) > 1 else 6.0
    aspect = _aspect(record.spacing, axis)
    first = planes[0][1]
    shape_ratio = min(2.0, max(0.25, first.shape[0] * aspect / first.shape[1]))  # panel height / width
    height = max(rows * panel * shape_ratio + 0.8, min(len(legend), LEGEND_ROWS) * 0.16 + 0.8)
    fig = Figure(figsize=(cols * panel + 2.2 * legend_cols, height), dpi=100)
    for n, (p, img, lab) in enumerate(planes):
        ax = fig.add_subplot(rows, cols, n + 1)
        ax.imshow(overlay_rgb(img, lab, manifest.num_labels, width_level), aspect=aspect, interpolation="nearest")
        ax.set_title(f"{axis} {p}/{count - 1}", fontsize=8)
        ax.set_axis_off()
    fig.suptitle(f"{subject} ({manifest.split_of().get(subject, 'no split')}), window "
                 f"{width_level[0]:g}/{width_level[1]:g} HU; {SIDE[axis]} on the left", fontsize=10)
    right = cols * panel / (cols * panel + 2.2 * legend_cols)
    fig.subplots_adjust(left=0.01, right=right - 0.01, top=1 - 0.6 / height, bottom=0.02, wspace=0.04, hspace=0.12)
    if legend:
        fig.legend(handles=legend, loc="center left", bbox_to_anchor=(right, 0.5), ncols=legend_cols,
                   fontsize=7, frameon=False, handlelength=1.2, borderaxespad=0.2)
    else:
        fig.text(right + 0.01, 0.5, "no labels in\nthese slices", fontsize=8)
    return write_atomic(out, lambda tmp: fig.savefig(tmp, format="png"), durable=False)  # a figure: drawn again

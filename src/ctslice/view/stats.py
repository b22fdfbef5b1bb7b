"""`cache stats`: the manifest's dataset statistics as a table and figures (structure frequency and volume,
foreground HU histogram, slices per subject). Reads the manifest and the slice index, which holds the subjects'
HU histograms summed (without such an index: each subject's small histogram, summed here). Figures are drawn on
matplotlib's Agg canvas (`Figure`, no pyplot)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..cache.manifest import Manifest, read_manifest
from ..colors import label_color
from ..errors import CacheError, CtsliceError
from ..files import write_atomic


def structure_rows(manifest: Manifest) -> list[tuple[int, str, int, int, float]]:
    """(index, name, subjects containing it, voxels, ml) per structure, in label-map order."""
    stats = manifest.statistics.get("structures", {})
    return [(i, name, stats.get(name, {}).get("subjects", 0), stats.get(name, {}).get("voxels", 0),
             stats.get(name, {}).get("ml", 0.0)) for i, name in manifest.labels.items() if i]


def figure_folder(cache: Path, out: Path | None) -> Path:
    """Where the figures go (default: CACHE-stats beside the cache); an existing file there is a user error,
    said before anything is printed or drawn."""
    out = Path(out) if out is not None else Path(f"{Path(cache).resolve()}-stats")
    if out.exists() and not out.is_dir():
        raise CtsliceError(f"--out {out} is a file, not a folder: give a folder for structures.png and dataset.png")
    return out


def dataset_histogram(cache: Path, manifest: Manifest) -> np.ndarray:
    """All subjects' foreground HU histograms summed: the slice index's sum (no subject read), or, for an index
    written without it or one that does not read (`cache verify` names the damage), each subject's summed here."""
    from ..cache import store
    from ..cache.statistics import summed_histogram

    if manifest.slice_index is not None:
        try:
            hist = store.read_slice_index(cache, manifest.slice_index).histogram
        except CacheError:
            hist = None
        if hist is not None:
            return hist
    return summed_histogram(cache, manifest.subjects.table.values())


def write_figures(cache: Path, out: Path, manifest: Manifest | None = None) -> list[Path]:
    """structures.png (frequency and mean volume per structure) and dataset.png (HU histogram, slices per
    subject) in `out`; returns their paths. `manifest`: the cache's, if the caller has read it already."""
    from matplotlib.figure import Figure

    from ..cache.statistics import HIST_OFFSET

    if manifest is None:
        manifest = read_manifest(cache)
    if not manifest.statistics:
        raise CacheError(f"{cache}: the manifest has no statistics (written by an older ctslice): run "
                         "`ctslice preprocess` on it again")
    out.mkdir(parents=True, exist_ok=True)
    rows = structure_rows(manifest)
    n = max(manifest.statistics.get("subjects", 0), 1)
    # One bar per structure, 0.16 in each: 117 structures stay readable in a tall figure.
    fig = Figure(figsize=(11, 1.2 + 0.16 * len(rows)), dpi=100)
    names = [f"{i} {name}" for i, name, *_ in rows]
    colors = [np.array(label_color(i)) / 255 for i, *_ in rows]
    y = np.arange(len(rows))[::-1]
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    ax1.barh(y, [r[2] / n * 100 for r in rows], color=colors)
    ax1.set_yticks(y, names, fontsize=7)
    ax1.set_xlabel(f"% of {n} subjects containing it")
    ax2.barh(y, [r[4] / r[2] if r[2] else 0 for r in rows], color=colors)
    ax2.set_yticks(y, [""] * len(rows))
    ax2.set_xscale("log")
    ax2.set_xlabel("mean volume where present (ml, log scale)")
    for ax in (ax1, ax2):
        ax.set_ylim(-0.6, len(rows) - 0.4)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(f"{cache}: structures", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / (1.2 + 0.16 * len(rows))))
    paths = [out / "structures.png"]
    write_atomic(paths[0], lambda tmp: fig.savefig(tmp, format="png"), durable=False)  # a figure: drawn again

    fig = Figure(figsize=(11, 4), dpi=100)
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    hist = dataset_histogram(cache, manifest)
    nonzero = np.flatnonzero(hist)
    if nonzero.size:
        lo, hi = nonzero[0], nonzero[-1] + 1
        width = max(1, (hi - lo) // 200)  # about 200 bars whatever the HU range
        edges = np.arange(lo, hi + width, width)
        counts = np.add.reduceat(hist[lo:hi], edges[:-1] - lo)
        ax1.bar(edges[:-1] - HIST_OFFSET, counts, width=width, align="edge", color="0.4")
        ax1.set_yscale("log")
    intensity = manifest.statistics.get("intensity", {})
    for key in ("p00_5", "p99_5"):
        if key in intensity:
            ax1.axvline(intensity[key], color="tab:red", lw=0.8)
    ax1.set_xlabel("HU of labelled voxels (red: 0.5 and 99.5 percentiles)")
    ax1.set_ylabel("voxels")
    ax2.hist([r.slices for r in manifest.subjects.table.values()], bins=30, color="tab:blue")
    ax2.set_xlabel("slices per subject")
    ax2.set_ylabel("subjects")
    fig.suptitle(f"{cache}: foreground intensities and subject lengths", fontsize=10)
    fig.tight_layout()
    paths.append(out / "dataset.png")
    write_atomic(paths[1], lambda tmp: fig.savefig(tmp, format="png"), durable=False)
    return paths

"""`ctslice bench metrics`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .app import bench_app, out, user_errors


@bench_app.command("metrics")
def bench_metrics(
    labels: Annotated[Optional[Path], typer.Option(help="A label NIfTI to score against itself moved one voxel "
                                                        "[default: a demo subject].")] = None,
    size: Annotated[int, typer.Option(help="In-plane voxels of the demo subject.")] = 256,
    tolerance: Annotated[float, typer.Option(help="Surface Dice tolerance in mm.")] = 2.0,
) -> None:
    """Seconds to score one subject (every metric of every structure), and for the surface Dice alone against
    MONAI's compute_surface_dice(use_subvoxels=True) on the same arrays when MONAI is installed.

    Example: ctslice bench metrics --size 512
    """
    with user_errors():
        from ..bench.metrics import bench_metrics as run

        r = run(labels, size, tolerance)
        shape = "x".join(str(n) for n in r.shape)
        out.print(f"metrics benchmark: {shape} voxels, spacing {tuple(round(s, 3) for s in r.spacing)} mm, "
                  f"{r.structures} structures, tolerance {tolerance} mm", highlight=False)
        out.print(f"  ctslice score_subject (all metrics)  {r.ours_score_s:7.2f} s", highlight=False)
        out.print(f"  ctslice surface Dice                 {r.ours_nsd_s:7.2f} s", highlight=False)
        if r.monai_nsd_s is None:
            out.print("  MONAI not importable: no comparison (pip install monai in another environment to see "
                      "the ratio)", highlight=False)
        else:
            out.print(f"  MONAI {r.monai_version} surface Dice (subvoxels)  {r.monai_nsd_s:7.2f} s   "
                      f"{r.ratio:.1f}x ours; largest |difference| {r.largest_difference:.1e}", highlight=False)

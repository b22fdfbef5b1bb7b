"""`ctslice bench incremental`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .app import bench_app, out, user_errors


@bench_app.command("incremental")
def bench_incremental(
    subjects: Annotated[int, typer.Option(help="Demo subjects (N).")] = 12,
    size: Annotated[int, typer.Option(help="In-plane voxels of the demo CTs (and the cached slice size).")] = 128,
    min_slices: Annotated[int, typer.Option(help="Fewest slices per subject.")] = 48,
    max_slices: Annotated[int, typer.Option(help="Most slices per subject.")] = 64,
    workers: Annotated[int, typer.Option(help="Dask workers (0 = in this process, no cluster start-up).")] = 0,
    workdir: Annotated[Optional[Path], typer.Option(help="Where the temporary dataset and cache go "
                                                         "[default: the system's temporary folder].")] = None,
) -> None:
    """Seconds for a full build of N demo subjects, for a run with nothing changed, and for the incremental run
    after one subject's CT changed; the ratio incremental/full against the ideal 1/N.

    Example: ctslice bench incremental --subjects 20 --size 256
    """
    with user_errors():
        from ..bench.incremental import bench_incremental as run

        r = run(subjects, size, (min_slices, max_slices), workers, workdir)
        out.print(f"incremental benchmark: {r.subjects} demo subjects {r.size}x{r.size}, "
                  f"{min_slices}-{max_slices} slices, workers={r.workers}", highlight=False)
        out.print(f"  full build                 {r.full_s:7.2f} s", highlight=False)
        out.print(f"  nothing changed            {r.noop_s:7.2f} s  (the constant part)", highlight=False)
        out.print(f"  1 of {r.subjects} subjects changed    {r.incremental_s:7.2f} s", highlight=False)
        out.print(f"  ratio incremental / full   {r.ratio:7.3f}    (ideal 1/N = {r.ideal:.3f}; "
                  f"1/N + constant/full = {r.ideal + r.noop_s / r.full_s:.3f})", highlight=False)

"""`ctslice bench scale`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .app import bench_app, out, user_errors


@bench_app.command("scale")
def bench_scale(
    subjects: Annotated[str, typer.Option(help="Comma-separated subject counts N to measure.")] = "1000,10000",
    workdir: Annotated[Optional[Path], typer.Option(help="Where the temporary datasets and caches go "
                                                         "[default: the system's temporary folder].")] = None,
) -> None:
    """Seconds of the fixed costs at N simulated subjects (hard links of 4 tiny synthetic ones): preprocess with
    nothing changed, with 1 subject changed, added or removed; cache status; cache info; SliceDataset creation;
    and the bookkeeping's size. Each is printed for every N, with its ratio largest N / smallest N.

    Example: ctslice bench scale --subjects 1000,10000
    """
    with user_errors():
        from ..bench.scale import LABELS, OPERATIONS, bench_scale as run

        try:
            counts = sorted({int(n) for n in subjects.split(",")})
        except ValueError:
            raise typer.BadParameter(f"--subjects: not a list of numbers: {subjects!r}") from None
        out.print(f"scale benchmark: N = {', '.join(map(str, counts))} simulated subjects (16x16 px, 4-6 slices); "
                  "wall seconds (CPU seconds of this process)", highlight=False)
        results = run(counts, workdir=workdir, progress=lambda r: out.print(
            f"  N={r.subjects}: built (seeded, then upgraded and indexed by the first run) in {r.build_s:.1f} s; "
            + ", ".join(f"{op} {r.seconds[op]:.2f} s" for op in OPERATIONS), highlight=False))
        head = "".join(f"{'N=' + str(r.subjects):>20s}" for r in results)
        out.print(f"  {'':32s}{head}   ratio", highlight=False)
        first, last = results[0], results[-1]
        for op in OPERATIONS:
            cells = "".join(f"{r.seconds[op]:9.2f} s ({r.cpu[op]:5.2f})" for r in results)
            out.print(f"  {LABELS[op]:32s}{cells}   {last.seconds[op] / first.seconds[op]:5.2f}", highlight=False)
        cells = "".join(f"{r.bookkeeping_bytes / 1e6:15.2f} MB " for r in results)
        out.print(f"  {'bookkeeping (manifest, records, index)':32s}{cells}  "
                  f"{last.bookkeeping_bytes / first.bookkeeping_bytes:5.2f}", highlight=False)

"""`ctslice bench safety`."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Optional

import typer

from .app import bench_app, out, user_errors


@bench_app.command("safety")
def bench_safety(
    kills: Annotated[int, typer.Option(help="preprocess/repair runs to SIGKILL at a random moment.")] = 20,
    corruptions: Annotated[int, typer.Option(help="Random corruptions of one cache file each.")] = 200,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same corruptions).")] = 0,
    workdir: Annotated[Optional[Path], typer.Option(help="Where the temporary datasets and caches go "
                                                         "[default: the system's temporary folder].")] = None,
) -> None:
    """Kills survived, corruptions caught, and the cost of syncing subject folders to disk (a few minutes).

    Example: ctslice bench safety --kills 40 --corruptions 400 --workdir /fast/tmp
    """
    with user_errors():
        from ..bench.safety import bench_safety as run

        r = run(workdir or Path(tempfile.gettempdir()), kills, corruptions, seed)
        out.print(f"kills        {r.survived} of {r.kills} survived ({r.killed_mid_run} landed mid-run)",
                  highlight=False)
        for failure in r.kill_failures:
            out.print(f"  not survived: {failure}", highlight=False)
        out.print(f"corruptions  {r.caught} caught, {r.harmless} harmless (reads unchanged), {len(r.missed)} missed "
                  f"of {r.corruptions}", highlight=False)
        for miss in r.missed:
            out.print(f"  missed: {miss}", highlight=False)
        cost = r.fsync_s / r.no_fsync_s - 1 if r.no_fsync_s else 0.0
        out.print(f"sync         preprocess {r.fsync_s:.2f} s with, {r.no_fsync_s:.2f} s without syncing the cache "
                  f"before the manifest swap ({cost:+.1%})", highlight=False)
        if r.kill_failures or r.missed:
            raise typer.Exit(1)

"""`ctslice bench safety`."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Optional

import typer

from .app import bench_app, out, shown, user_errors

_HEADER = f"{'family':<32}{'tried':>7}{'survived':>10}{'tracebacks':>12}{'hangs':>7}{'files lost':>12}"


@bench_app.command("safety")
def bench_safety(
    kills: Annotated[int, typer.Option(help="preprocess/repair runs to SIGKILL at a random moment.")] = 6,
    corruptions: Annotated[int, typer.Option(help="Random corruptions of one cache file each.")] = 60,
    write_paths: Annotated[int, typer.Option(
        help="predict/evaluate --out aimed at the dataset or the cache, cache clean on a copied manifest.")] = 10,
    pairs: Annotated[int, typer.Option(
        help="Two writers at once: this many pairs of `train` into one --out and of `preprocess` into one "
             "cache.")] = 1,
    train_kills: Annotated[int, typer.Option(
        help="Training runs to SIGKILL (every other one as its best checkpoint is written).")] = 4,
    readers: Annotated[int, typer.Option(help="Cache readers during 2-3 preprocess updates.")] = 2,
    reader_trains: Annotated[int, typer.Option(help="Training runs during 2-3 preprocess updates.")] = 1,
    flips: Annotated[int, typer.Option(help="Single random bit flips in a checkpoint, each loaded.")] = 100,
    only: Annotated[Optional[str], typer.Option(
        help="Comma-separated families to run: kills, corruptions, sync, write-paths, two-writers, train-kills, "
             "readers, flips [default: all].")] = None,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same corruptions).")] = 0,
    workdir: Annotated[Optional[Path], typer.Option(help="Where the temporary datasets and caches go "
                                                         "[default: the system's temporary folder].")] = None,
) -> None:
    """Attacks on everything that writes and reads back, counted per family: tried, survived, tracebacks
    (target 0), hangs (target 0), files lost (target 0); plus the cost of syncing the cache to disk. Exits 1 if
    any attack was not survived. A few minutes at the defaults on 2 cores.

    Example: ctslice bench safety --kills 40 --corruptions 400 --flips 500 --workdir /fast/tmp
    """
    with user_errors():
        from ..bench.attack import total
        from ..bench.safety import FAMILIES, Counts
        from ..bench.safety import bench_safety as run
        from ..errors import CtsliceError

        families = tuple(f.strip() for f in only.split(",")) if only else FAMILIES
        unknown = [f for f in families if f not in FAMILIES]
        if unknown:
            raise CtsliceError(f"--only: unknown families {', '.join(unknown)}; choose from {', '.join(FAMILIES)}")
        counts = Counts(kills=kills, corruptions=corruptions, write_paths=write_paths, pairs=pairs,
                        train_kills=train_kills, readers=readers, reader_trains=reader_trains, flips=flips)
        r = run(workdir or Path(tempfile.gettempdir()), counts, seed, families=families)
        out.print(_HEADER, highlight=False)
        for t in [*r.tallies, total(r.tallies)]:
            out.print(f"{t.family:<32}{t.tried:>7}{t.survived:>10}{t.tracebacks:>12}{t.hangs:>7}{t.files_lost:>12}",
                      highlight=False)
        for t in r.tallies:
            for note in t.notes:
                out.print(f"  {t.family}: {shown(note)}", highlight=False)
            for failure in t.failures:
                out.print(f"  not survived, {t.family}: {shown(failure)}", highlight=False)
        if "sync" in families:
            cost = r.fsync_s / r.no_fsync_s - 1 if r.no_fsync_s else 0.0
            out.print(f"sync: preprocess {r.fsync_s:.2f} s with, {r.no_fsync_s:.2f} s without syncing the cache "
                      f"before the manifest swap ({cost:+.1%})", highlight=False)
        if not all(t.ok for t in r.tallies):
            raise typer.Exit(1)

"""`ctslice bench store`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .app import bench_app, console, out, user_errors
from .storage import StorageOptions


@bench_app.command("store")
def bench_store(
    cache: Annotated[Optional[str], typer.Option(help="s3://bucket/prefix of an existing cache [default: start a "
                                                      "moto S3 server on 127.0.0.1 and preprocess demo data into it]"
                                                 )] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the demo data and the mirrors.")] = Path(
        "bench-out"),
    subjects: Annotated[int, typer.Option(help="Demo subjects (own store).")] = 8,
    size: Annotated[int, typer.Option(help="Slice size in pixels (own store).")] = 256,
    min_slices: Annotated[int, typer.Option(help="Fewest slices per demo subject.")] = 40,
    max_slices: Annotated[int, typer.Option(help="Most slices per demo subject.")] = 50,
    workers: Annotated[int, typer.Option(help="DataLoader workers (0: read in this process, i.e. what one worker "
                                               "does; with workers, their start is inside the time).")] = 0,
    batch_size: Annotated[int, typer.Option(help="DataLoader batch size.")] = 16,
    layout: Annotated[str, typer.Option(help="Array layout of the own store's cache: shards (one object per array "
                                        "and subject, a new store cache's default) or slices (one per slice).")
                      ] = "shards",
    storage_option: StorageOptions = None,
) -> None:
    """DataLoader pairs/s from a cache on object storage (first epoch through an empty local mirror, then a warm
    one) beside local disk, and the ratios.

    Example: ctslice bench store --subjects 8 --size 256
    """
    with user_errors():
        from ..bench.demo import benchmark_spec, ensure_demo_dataset
        from ..bench.store import format_rows, run_store_benchmark
        from ..config import LoaderConfig

        log = lambda message: console.print(message, highlight=False)  # noqa: E731
        data = None
        if cache is None:
            data = ensure_demo_dataset(out_dir / f"demo-store-{size}px-{subjects}",
                                       benchmark_spec(subjects, size, (min_slices, max_slices)))
        cfg = LoaderConfig(batch_size=batch_size, workers=workers, persistent_workers=workers > 0)
        rows = run_store_benchmark(out_dir, cache, storage_option or [], data, cfg, log, layout=layout)
        for line in format_rows(rows, cfg):
            out.print(line, highlight=False)

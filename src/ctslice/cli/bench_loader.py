"""`ctslice bench loader`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from .app import bench_app, console, out, user_errors


def parse_worker_counts(text: str) -> tuple[int, ...]:
    """"0,1,2,N" -> (0, 1, 2, cores), without repeats."""
    cores = len(os.sched_getaffinity(0))
    counts: list[int] = []
    for part in text.split(","):
        part = part.strip()
        value = cores if part.upper() == "N" else int(part) if part.isdigit() else None
        if value is None:
            raise typer.BadParameter(f"worker counts are numbers or N (all cores), got {part!r}")
        if value not in counts:
            counts.append(value)
    return tuple(counts)


@bench_app.command("loader")
def bench_loader(
    cache: Annotated[Optional[str], typer.Option(help="An existing cache to read (default: a 512x512 demo cache "
                                                      "generated under --out once, then reused); s3://bucket/prefix: "
                                                      "`ctslice bench store` on it.")] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the generated demo data, its cache and the "
                                                        "raw .npy copy.")] = Path("bench-out"),
    subjects: Annotated[int, typer.Option(help="Demo subjects (when generating).")] = 16,
    size: Annotated[int, typer.Option(help="Slice size in pixels (when generating).")] = 512,
    min_slices: Annotated[int, typer.Option(help="Fewest slices per demo subject.")] = 125,
    max_slices: Annotated[int, typer.Option(help="Most slices per demo subject.")] = 135,
    split: Annotated[str, typer.Option(help="Split whose slices are read.")] = "train",
    workers: Annotated[str, typer.Option(help="DataLoader worker counts to compare; N = all cores.")] = "0,1,2,N",
    batch_size: Annotated[int, typer.Option(help="DataLoader batch size.")] = 16,
    batches: Annotated[int, typer.Option(help="Timed batches per DataLoader (after warm-up).")] = 48,
    samples: Annotated[int, typer.Option(help="Pairs read one by one in the single-process rows.")] = 1000,
    naive: Annotated[int, typer.Option(help="Samples read the naive way (each loads a whole subject).")] = 3,
    context_slices: Annotated[int, typer.Option(help="2.5D context slices k (odd).")] = 1,
    rounds: Annotated[int, typer.Option(help="Rounds per comparison, ctslice and .npy in turn; each row is its "
                                             "best round (a shared machine's load moves single runs 2-4x).")] = 3,
    alternatives: Annotated[bool, typer.Option("--alternatives", help="Also time other ways to read: zarr-python, "
                                               "read_bytes, pread, threads, stacking.")] = False,
    steps: Annotated[bool, typer.Option("--steps", help="Also time each step of reading a pair in one process "
                                        "(file reads, crc32c, Blosc decode, the Python around them) beside the "
                                        ".npy ceiling's copy.")] = False,
    shards: Annotated[bool, typer.Option("--shards/--no-shards", help="Also read the same cache in the shards "
                                         "layout (built once under --out from its dataset), row by row beside "
                                         "it.")] = True,
    json_file: Annotated[Optional[Path], typer.Option("--json", help="Also write the results here.")] = None,
) -> None:
    """Slice pairs per second: naive NIfTI reading, the ctslice dataset and DataLoader, and the same DataLoader
    over an uncompressed .npy memmap of the same slices (the ceiling); cache size against raw size, and each
    worker's peak memory.

    The default (16 demo subjects, >= 2,000 slices of 512x512, 48 batches per row) takes about 3 minutes the
    first time on 2 cores (demo data, cache and .npy copy are made once, under --out) and about 2 minutes after
    (3 alternating rounds of each comparison).

    Example (a GPU machine): ctslice bench loader --subjects 48 --workers 0,1,2,4,8,N --batches 200 --json r.json
    """
    with user_errors():
        from ..bench.loader import ensure_bench_cache, ensure_sharded_copy, format_table, run_loader_benchmark

        counts = parse_worker_counts(workers)
        log = lambda message: console.print(message, highlight=False)  # noqa: E731
        if cache is not None and cache.startswith("s3://"):  # pairs/s from the store beside local disk
            from .bench_store import bench_store

            return bench_store(cache=cache, out_dir=out_dir, workers=counts[0], batch_size=batch_size)
        if cache is None:
            cache = ensure_bench_cache(out_dir, subjects, size, (min_slices, max_slices), log=log)
        sharded = ensure_sharded_copy(cache, out_dir, log=log) if shards else None
        result = run_loader_benchmark(cache, out_dir, split=split, worker_counts=counts, batch_size=batch_size,
                                      batches=batches, samples=samples, naive_samples=naive,
                                      context_slices=context_slices, rounds=rounds, sharded=sharded, log=log)
        for line in format_table(result):
            out.print(line, highlight=False)
        if alternatives:
            from ..bench.read_alternatives import measure_alternatives

            log("alternatives (one process, best of 3) ...")
            result["alternatives"] = measure_alternatives(cache, split, batch_size=batch_size)
            out.print(f"{'other ways to read, one process':58s} {'pairs/s':>10s}")
            for row in result["alternatives"]:
                out.print(f"{row['name']:58s} {row['pairs_per_s']:10.1f}", highlight=False)
        if steps:
            from ..bench.loader import npy_dataset
            from ..bench.read_steps import measure_steps
            from ..data.dataset import SliceDataset, single_threaded_blosc

            log("steps of reading a pair (one process, k = 1, CPU time, best of 5) ...")
            ds = SliceDataset(cache, split)
            with single_threaded_blosc():
                result["steps"] = measure_steps(ds, npy_dataset(ds, out_dir), batch_size=batch_size)
            out.print(f"{'where a pair goes, one process':58s} {'CPU us/pair':>11s}")
            for row in result["steps"]:
                out.print(f"{row['step']:58s} {row['us_per_pair']:11.1f}", highlight=False)
        if json_file:
            json_file.write_text(json.dumps(result, indent=1))

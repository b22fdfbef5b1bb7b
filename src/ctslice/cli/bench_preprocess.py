"""`ctslice bench preprocess` and `ctslice bench codecs`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from .app import bench_app, out, user_errors


@bench_app.command("preprocess")
def bench_preprocess(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the generated demo data.")] = Path("bench-out"),
    subjects: Annotated[int, typer.Option(help="Demo subjects.")] = 4,
    size: Annotated[int, typer.Option(help="In-plane voxels of the demo CTs.")] = 512,
    min_slices: Annotated[int, typer.Option(help="Fewest slices per subject.")] = 80,
    max_slices: Annotated[int, typer.Option(help="Most slices per subject.")] = 100,
    workers: Annotated[int, typer.Option(help="Worker count to compare with 1.")] = 2,
    json_file: Annotated[Optional[Path], typer.Option("--json", help="Also write the results here.")] = None,
) -> None:
    """Seconds per subject to preprocess 512x512 demo subjects (in-process, 1 and N dask workers) against the
    floor of only reading their NIfTI files with nibabel.

    Example: ctslice bench preprocess --subjects 8 --workers 8
    """
    with user_errors():
        from ..bench.preprocess import run_preprocess_benchmark

        r = run_preprocess_benchmark(out_dir, subjects, size, (min_slices, max_slices), workers)
        floor = r["read_floor_s_per_subject"]
        out.print(f"preprocess benchmark: {subjects} demo subjects {size}x{size}, {min_slices}-{max_slices} slices, "
                  f"settings {r['settings']}")
        out.print(f"  {'read only (nibabel, the floor)':34s} {floor:7.2f} s/subject")
        for key, label in (("in_process", "preprocess, in-process"), ("dask_1_worker", "preprocess, dask 1 worker"),
                           (f"dask_{workers}_workers", f"preprocess, dask {workers} workers")):
            s = r[f"{key}_s_per_subject"]
            out.print(f"  {label:34s} {s:7.2f} s/subject  ({s / floor:.2f}x the floor)")
        out.print(f"  speed-up 1 -> {workers} workers: {r[f'speedup_1_to_{workers}_workers']:.2f}x")
        if json_file:
            json_file.write_text(json.dumps(r, indent=1))


@bench_app.command("codecs")
def bench_codecs(
    cache: Annotated[Path, typer.Argument(help="A cache to take slices from (512x512 ones are representative).")],
    slices: Annotated[int, typer.Option(help="Slices to sample.")] = 64,
) -> None:
    """Compression ratio and one-core decode speed of Blosc codecs on a cache's slices (the store's choice).

    Example: ctslice bench codecs bench-out/cache-512
    """
    with user_errors():
        from ..bench.codecs import measure_codecs

        out.print(f"{'codec':30s} {'image ratio':>11s} {'decode MB/s':>11s} {'us/image':>9s} {'label ratio':>11s} "
                  f"{'decode MB/s':>11s} {'us/label':>9s}")
        for row in measure_codecs(cache, slices):
            out.print(f"{row['codec']:30s} {row['image_ratio']:11.2f} {row['image_decode_MBps']:11.0f} "
                      f"{row['image_decode_us']:9.0f} {row['label_ratio']:11.1f} {row['label_decode_MBps']:11.0f} "
                      f"{row['label_decode_us']:9.0f}")

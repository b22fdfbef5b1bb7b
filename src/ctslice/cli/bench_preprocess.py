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
    data: Annotated[Optional[Path], typer.Option(help="A dataset to measure instead of demo subjects (e.g. the "
                                                      "real TotalSegmentator subject).")] = None,
    json_file: Annotated[Optional[Path], typer.Option("--json", help="Also write the results here.")] = None,
) -> None:
    """Seconds per subject to preprocess 512x512 demo subjects (in-process, 1 and N dask workers) against the
    floor of only reading their NIfTI files with stock nibabel, and whether every run cached the same arrays.

    Example: ctslice bench preprocess --subjects 8 --workers 8
    """
    with user_errors():
        from ..bench.preprocess import TARGET_SPEEDUP, TARGET_VS_FLOOR, run_preprocess_benchmark

        r = run_preprocess_benchmark(out_dir, subjects, size, (min_slices, max_slices), workers, data)
        floor = r["read_floor_s_per_subject"]
        what = f"{r['subjects']} subject(s) of {data}" if data else \
            f"{subjects} demo subjects {size}x{size}, {min_slices}-{max_slices} slices"
        out.print(f"preprocess benchmark: {what}, settings {r['settings']}")
        out.print(f"  {'read only (stock nibabel, the floor)':38s} {floor:7.3f} s/subject  "
                  f"(CPU {r['read_floor_cpu_s_per_subject']:.3f} s)")
        for key, label in (("in_process", "preprocess, in-process"), ("dask_1_worker", "preprocess, dask 1 worker"),
                           (f"dask_{workers}_workers", f"preprocess, dask {workers} workers")):
            if f"{key}_s_per_subject" in r:
                s = r[f"{key}_s_per_subject"]
                out.print(f"  {label:38s} {s:7.3f} s/subject  ({s / floor:.2f}x the floor)")
        out.print(f"  in-process vs floor: {r['in_process_vs_floor']:.2f}x (target <= {TARGET_VS_FLOOR:.1f}x); "
                  f"CPU time {r['in_process_cpu_s_per_subject']:.3f} s/subject, "
                  f"{r['in_process_cpu_vs_floor_cpu']:.2f}x the floor's")
        speedup = r.get(f"speedup_1_to_{workers}_workers")
        if speedup is not None:
            out.print(f"  speed-up 1 -> {workers} workers: {speedup:.2f}x (target >= {TARGET_SPEEDUP:.1f}x)")
        else:
            out.print("  one subject: processed in-process only, no dask rows")
        digest = r["arrays_digest"]
        out.print(f"  cached arrays: sha256 {digest}, identical in every run" if isinstance(digest, str)
                  else f"  cached arrays DIFFER between runs: {digest}")
        w = r["subject_write"]
        out.print(f"  writing one subject's arrays ({w['shape'][0]}x{w['shape'][1]}x{w['shape'][2]}), best of 3:")
        for name, seconds in w["seconds"].items():
            out.print(f"    {name:34s} {seconds:7.3f} s  ({w['vs_zarr'][name]:.2f}x zarr's)")
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

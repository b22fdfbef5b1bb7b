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
    layout: Annotated[str, typer.Option(help="Array layout of the caches built: slices (a file per slice, the "
                                        "default) or shards (a file per array and subject).")] = "slices",
) -> None:
    """Seconds per subject to preprocess 512x512 demo subjects (in-process, 1 and N dask workers) against the
    floor of only reading their NIfTI files with stock nibabel, and whether every run cached the same arrays.

    Example: ctslice bench preprocess --subjects 8 --workers 8
    """
    with user_errors():
        from ..bench.preprocess import TARGET_SPEEDUP, TARGET_VS_FLOOR, run_preprocess_benchmark

        r = run_preprocess_benchmark(out_dir, subjects, size, (min_slices, max_slices), workers, data,
                                     layout=layout)
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
                extra = "" if f"{key}_cluster_s" not in r else (
                    f"; cluster start+stop {r[f'{key}_cluster_s']:.2f} s, without it "
                    f"{r[f'{key}_s_per_subject_without_cluster']:.3f} s/subject")
                out.print(f"  {label:38s} {s:7.3f} s/subject  ({s / floor:.2f}x the floor; CPU "
                          f"{r[f'{key}_cpu_s_per_subject']:.3f} s{extra})")
        out.print(f"  in-process vs floor: {r['in_process_vs_floor']:.2f}x (target <= {TARGET_VS_FLOOR:.1f}x); "
                  f"CPU time {r['in_process_cpu_s_per_subject']:.3f} s/subject, "
                  f"{r['in_process_cpu_vs_floor_cpu']:.2f}x the floor's")
        speedup = r.get(f"speedup_1_to_{workers}_workers")
        if speedup is not None:
            out.print(f"  speed-up 1 -> {workers} workers: {speedup:.2f}x (target >= {TARGET_SPEEDUP:.1f}x); "
                      f"without the cluster's start and stop: "
                      f"{r[f'speedup_1_to_{workers}_workers_without_cluster']:.2f}x")
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
    caches: Annotated[list[Path], typer.Argument(help="Caches to take slices from (512x512 ones are "
                                                      "representative); each gets its own table.")],
    dataset: Annotated[Optional[Path], typer.Option(help="Also a dataset (e.g. ../shared/data/totalseg_example): "
                                                         "preprocessed once under --out with the default settings, "
                                                         "then measured like a cache.")] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Where --dataset's cache is built.")] = Path("bench-out"),
    slices: Annotated[int, typer.Option(help="Slices to sample per cache.")] = 64,
) -> None:
    """Per Blosc codec: compression ratio of images and labels, and what a loader worker pays per slice (decode
    into a reused array plus the crc32c over the stored bytes, one core), against the cache's own codec.

    Example: ctslice bench codecs bench-out/loader-cache-512px-16x125-135-seed0 --dataset ../shared/data/totalseg_example
    """
    with user_errors():
        from ..bench.codecs import format_codecs, measure_codecs

        if dataset is not None:
            from ..config import PreprocessConfig
            from ..errors import CtsliceError
            from ..preprocess.run import run_preprocess

            built = out_dir / f"codecs-cache-{dataset.resolve().name}"
            if not run_preprocess(dataset, built, PreprocessConfig()).ok:
                raise CtsliceError(f"{dataset}: preprocessing for the codec benchmark failed")
            caches = [*caches, built]
        for cache in caches:
            rows = measure_codecs(cache, slices)
            title = f"{cache}: {rows[0]['slices']} slices of {slices} asked for, one core, CPU us a slice (best of 5)"
            for line in format_codecs(title, rows):
                out.print(line, highlight=False)

"""`ctslice preprocess` and `ctslice demo-data`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..config import PreprocessConfig
from .app import app, console, out, shown, user_errors
from .storage import StorageOptions, opened

# Defaults live in ctslice.config; the help shows them from there. Options default to None = "not given", so that a
# --config file can set them too (flags > file > defaults).
_D = PreprocessConfig()


@app.command()
def preprocess(
    data: Annotated[Path, typer.Argument(help="Dataset folder (TotalSegmentator or nnU-Net layout).")],
    cache: Annotated[str, typer.Option("--cache", "-c", help="Cache folder to create or update, or s3://bucket/prefix "
                                                             "(see --storage-option).")] = "cache",
    config: Annotated[Optional[Path], typer.Option(help="TOML file with a [preprocess] section.")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Local dask worker processes (default: all cores; "
                                                        "capped by cores, subjects and memory; "
                                                        "0 = no dask, in this process).")] = None,
    dask_scheduler: Annotated[Optional[str], typer.Option(
        help="Existing dask cluster: tcp://host:8786 or a scheduler file; the cache must be on shared storage.",
    )] = None,
    spacing: Annotated[Optional[str], typer.Option(
        help=f"In-plane spacing in mm, or 'native'. [default: the cache's; new: {_D.spacing}]")] = None,
    size: Annotated[Optional[int], typer.Option(
        help=f"Slice size in pixels (centre pad/crop). [default: the cache's; new: {_D.size}]")] = None,
    hu_min: Annotated[Optional[int], typer.Option(
        help=f"Lower HU clip. [default: the cache's; new: {_D.hu_min}]")] = None,
    hu_max: Annotated[Optional[int], typer.Option(
        help=f"Upper HU clip. [default: the cache's; new: {_D.hu_max}]")] = None,
    val_fraction: Annotated[Optional[float], typer.Option(
        help=f"Val share without an official split. [default: the cache's; new: {_D.val_fraction}]")] = None,
    seed: Annotated[Optional[int], typer.Option(
        help=f"Seed of the split rule. [default: the cache's; new: {_D.seed}]")] = None,
    layout: Annotated[Optional[str], typer.Option(
        help="How the arrays lie on disk: slices (a file per slice) or shards (a zarr shard file per array, for "
             f"object storage); a change rewrites every subject. [default: the cache's; new: {_D.layout}]")] = None,
    force: Annotated[bool, typer.Option("--force", help="Rebuild every subject, even unchanged ones.")] = False,
    storage_option: StorageOptions = None,
) -> None:
    """Build or update the slice cache of a dataset: only new or changed subjects are processed.

    Example: ctslice preprocess /data/Totalsegmentator_dataset_v201 --cache /fast/cache --workers 8

    Updating an existing cache keeps its settings (spacing, size, HU range, split). A --spacing, --size,
    --hu-min or --hu-max that differs rebuilds every subject, and the output says which setting changed;
    --seed and --val-fraction rebuild nothing: they only assign again the subjects without an official split
    (meta.csv), and the output names each subject that moves to another split.

    Subjects that fail are named with file and reason, listed in the manifest, and make the command exit 1;
    the other subjects, and what the cache already held, are kept.
    """
    with user_errors():
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        from ..cache.location import shown as where
        from ..cache.warnings import summary_lines
        from ..preprocess.run import run_preprocess

        columns = (TextColumn("preprocess"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   TextColumn("{task.description}"))
        bar = Progress(*columns, console=console)  # started with the first subject, not before discovery
        task = bar.add_task("", total=None)

        def advance(done: int, total: int, outcome) -> None:
            bar.start()
            bar.update(task, completed=done, total=total, description=shown(outcome.subject))
            if outcome.error:
                bar.console.print(f"[red]failed[/] {shown(outcome.error)}", highlight=False, soft_wrap=True)

        try:
            # Only what the user gave: the library resolves it over --config, the cache's own settings, the defaults.
            given = {"workers": workers, "dask_scheduler": dask_scheduler, "spacing": spacing, "size": size,
                     "hu_min": hu_min, "hu_max": hu_max, "val_fraction": val_fraction, "seed": seed,
                     "layout": layout}
            folder = opened(cache, storage_option, config, writing=True)
            report = run_preprocess(data, folder, given, config_file=config, force=force, progress=advance,
                                    say=lambda note: console.print(shown(note), highlight=False, soft_wrap=True))
        finally:
            if bar.live.is_started:  # stopping a bar that never started prints an empty line
                bar.stop()
        summary = (f"{where(report.cache)}: {len(report.processed)} processed, {len(report.reused)} reused, "
                   f"{len(report.unchanged)} unchanged, {len(report.removed)} removed, {len(report.failed)} failed "
                   f"in {report.seconds:.1f} s")
        if report.rebuilt_all:
            summary += f" (full build: {report.rebuilt_all})"
        elif not report.written:
            summary += " (nothing changed: the cache was left as it was)"
        out.print(shown(summary), highlight=False)
        for line in summary_lines(report.warnings):
            console.print(f"[yellow]warning:[/] {shown(line)}", highlight=False, soft_wrap=True)
        if report.failed:
            console.print(f"[bold red]{len(report.failed)} subject(s) failed:[/]")
            for reason in report.failed.values():
                console.print(f"  {shown(reason)}", highlight=False, soft_wrap=True)
            raise typer.Exit(1)


@app.command("demo-data")
def demo_data(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write the synthetic dataset to.")],
    subjects: Annotated[int, typer.Option(help="Number of subjects.")] = 8,
    size: Annotated[int, typer.Option(help="In-plane voxels (size x size).")] = 64,
    min_slices: Annotated[int, typer.Option(help="Fewest slices per subject.")] = 16,
    max_slices: Annotated[int, typer.Option(help="Most slices per subject.")] = 32,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same files).")] = 0,
) -> None:
    """Write a synthetic CT dataset in the TotalSegmentator layout (CT-like volumes, organ masks, meta.csv).

    Example: ctslice demo-data data/demo --subjects 20 --size 512 --min-slices 100 --max-slices 120
    """
    with user_errors():
        from rich.progress import Progress

        from ..errors import CtsliceError

        from ..synthetic import DemoSpec, generate_demo_dataset

        try:
            spec = DemoSpec(subjects=subjects, size=size, slices=(min_slices, max_slices), seed=seed)
        except ValueError as e:
            raise CtsliceError(f"demo-data: {e}") from None
        with Progress(console=console) as bar:
            task = bar.add_task("demo-data", total=subjects)
            ids = generate_demo_dataset(out_dir, spec, progress=lambda done, total: bar.update(task, completed=done))
        out.print(f"{out_dir}: {len(ids)} synthetic subjects ({size}x{size}, {min_slices}-{max_slices} slices)")

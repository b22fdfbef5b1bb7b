"""`ctslice cache ...`: inspect, check and clean a slice cache."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..text import first_few
from .app import cache_app, console, out, shown, user_errors
from .storage import StorageOptions, opened

CacheArg = Annotated[str, typer.Argument(help="Cache folder (the one holding manifest.json), or s3://bucket/prefix.")]


def _say(text: str) -> None:
    out.print(shown(text, keep_newlines=True), highlight=False, soft_wrap=True)


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return ""


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


@cache_app.command()
def info(cache: CacheArg, as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
         storage_option: StorageOptions = None) -> None:
    """What a cache holds: subjects and slices per split, structures, slice size, spacing, settings, size on disk.

    Example: ctslice cache info /fast/cache --json
    """
    with user_errors():
        from ..cache.info import cache_info
        from ..cache.warnings import summary_lines

        i = cache_info(opened(cache, storage_option))
        if as_json:
            named = _named(i.cache)
            mirror = {"mirror": str(i.cache)} if named != str(i.cache) else {}
            typer.echo(json.dumps({**i.to_json(), "cache": named, **mirror}, indent=1))
            return
        spacing = "native" if i.settings.get("spacing") is None else f"{i.settings['spacing']} mm"
        lines = [
            f"cache      {_named(i.cache)}",
            f"dataset    {i.dataset.get('root', '?')} ({i.dataset.get('layout', '?')} layout)",
            f"format     version {i.format_version}, written by ctslice {i.ctslice_version}",
            f"created    {_when(i.created)}, updated {_when(i.updated)}",
            f"subjects   {i.subjects} ({i.slices} slices)" + (f", {i.failed} failed" if i.failed else ""),
            *(f"  {name:<8} {s['subjects']} subjects, {s['slices']} slices" for name, s in i.splits.items()),
            f"structures {i.structures} (+ background)",
            f"slices     {', '.join('x'.join(map(str, s)) for s in i.slice_size) or '-'} px, in-plane spacing "
            f"{spacing}",
            "spacing    " + (", ".join(f"{axis} {r[0]}-{r[1]} mm" for axis, r in i.spacing_mm.items() if r) or "-"),
            "settings   " + ", ".join(f"{k}={v}" for k, v in i.settings.items()),
            f"size       {_size(i.size.bytes)} in {i.size.files} files ({_size(i.size.disk_bytes)} on disk); "
            f"raw {_size(i.raw_bytes)}, compression {i.compression_ratio:.2f}x",
        ]
        if i.leftovers.files:
            lines.append(f"leftovers  {_size(i.leftovers.bytes)} in {i.leftovers.files} files "
                         "(ctslice cache clean --leftovers)")
        lines += [f"warning    {line}" for line in summary_lines(i.warnings)]
        _say("\n".join(lines))


@cache_app.command()
def status(
    cache: CacheArg,
    data: Annotated[Optional[Path], typer.Option(help="Dataset folder [default: the one the cache was built "
                                                      "from].")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    storage_option: StorageOptions = None,
) -> None:
    """What changed in the dataset since the cache was built. Exit code 0: up to date, 1: stale.

    Example: ctslice cache status /fast/cache --data /data/Totalsegmentator_dataset_v201
    """
    with user_errors():
        from ..preprocess.plan import describe_changes
        from ..preprocess.status import cache_status

        s = cache_status(opened(cache, storage_option), data)
        if as_json:
            typer.echo(json.dumps(s.to_json(), indent=1))
        else:
            c = s.changes
            lines = [f"{_named(s.cache)} against {s.data}:"]
            if c.settings_changed:
                what = describe_changes(s.changed_settings) or "the format"
                lines.append(f"  settings changed: {what}: the next preprocess rebuilds every subject")
            for name in ("added", "modified", "removed"):
                ids = getattr(c, name)
                if ids:
                    lines.append(f"  {name:<9} {len(ids):>5}: {first_few(ids, 20)}")
            if s.split_moves:
                lines.append(f"  split     {len(s.split_moves):>5}: {first_few(s.split_moves, 20)} (the next "
                             "preprocess moves them)")
            if s.retry:
                lines.append(f"  (failed in the last run, tried again by the next: {first_few(s.retry, 20)})")
            lines.append(f"  unchanged {len(c.unchanged):>5}" +
                         (f" ({len(c.touched)} only touched)" if c.touched else ""))
            lines.append("up to date" if s.up_to_date else "stale: run `ctslice preprocess` to update")
            _say("\n".join(lines))
        if not s.up_to_date:
            raise typer.Exit(1)


@cache_app.command()
def verify(
    cache: CacheArg,
    repair: Annotated[bool, typer.Option("--repair", help="Compute the damaged subjects again from the dataset; healthy subjects, split and label map stay as "
                          "they are. Refused when the dataset lacks a cached subject or gives another label map.")] = False,
    data: Annotated[Optional[Path], typer.Option(help="Dataset folder for --repair [default: the one the cache "
                                                      "was built from].")] = None,
    workers: Annotated[int, typer.Option(help="Threads decoding chunks.")] = 4,
    repair_workers: Annotated[int, typer.Option(help="Dask workers for --repair (0 = in this process).")] = 0,
    storage_option: StorageOptions = None,
) -> None:
    """Decode every chunk, check its checksum, and check that manifest, arrays and slice index agree.
    Exit code 1 when anything is wrong (each problem is listed with subject and slice).

    Example: ctslice cache verify /fast/cache --repair --data /data/Totalsegmentator_dataset_v201
    """
    with user_errors():
        from ..cache.location import is_remote
        from ..preprocess.repair import verify_and_repair

        if is_remote(cache):
            _verify_store(cache, repair, storage_option, workers)
            return
        with _VerifyBar() as bar:
            result = verify_and_repair(cache, repair, data, workers, repair_workers, progress=bar.advance,
                                       checked=bar.then(_print_verify))
        if result.repair is not None:
            pre = result.repair.preprocess
            _say(f"repair: {len(result.repair.damaged)} damaged subject(s) computed again, processed "
                 f"{len(pre.processed)}, failed {len(pre.failed)}")
            for reason in pre.failed.values():
                _say(f"  failed: {reason}")
            _print_verify(result.verified_again)
        if not result.ok:
            raise typer.Exit(1)


class _VerifyBar:
    """One transient progress bar per verify: started by its first subject, gone before its report is printed."""

    def __init__(self) -> None:
        self.bar = None

    def advance(self, done: int, total: int, subject: str) -> None:
        if self.bar is None:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("verify"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                                TextColumn("{task.description}"), console=console, transient=True)
            self.task = self.bar.add_task("", total=None)
            self.bar.start()
        self.bar.update(self.task, completed=done, total=total, description=subject)

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None

    def then(self, show):
        """`show(report)` once the bar is gone."""
        def after_the_bar(report) -> None:
            self.stop()
            show(report)
        return after_the_bar

    def __enter__(self) -> "_VerifyBar":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _verify_store(cache: str, repair: bool, options: list[str] | None, workers: int) -> None:
    """verify of a cache on object storage: every object of its current version fetched fresh (not the mirror)."""
    from ..cache.remote_verify import verify_store
    from ..errors import CtsliceError

    if repair:
        raise CtsliceError("--repair of a cache on object storage: run `ctslice preprocess --force` instead")
    with _VerifyBar() as bar:
        report = verify_store(opened(cache, options), workers, progress=bar.advance)
    _print_verify(report)
    if not report.ok:
        raise typer.Exit(1)


def _named(cache) -> str:
    from ..cache.location import shown as where

    return where(cache)


def _print_verify(report) -> None:
    for problem in report.problems:
        _say(f"problem: {problem}")
    for path in report.leftovers:
        _say(f"leftover (not an error; removed by the next preprocess or `cache clean --leftovers`): {path}")
    verdict = "OK" if report.ok else f"{len(report.problems)} problem(s)"
    if report.damaged_subjects:
        verdict += f", damaged subject(s): {first_few(report.damaged_subjects, 20)}"
    _say(f"{_named(report.cache)}: {report.subjects} subjects, {report.slices} slices, {report.chunks} chunks checked: "
         f"{verdict}")


@cache_app.command()
def clean(
    cache: CacheArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    leftovers: Annotated[bool, typer.Option("--leftovers", help="Keep the cache; remove only what its manifest no "
                     "longer references: what interrupted runs left behind and the folders of the previous version "
                     "(subjects superseded by the last preprocess or repair, e.g. a repaired subject's damaged "
                     "folder, and subjects that left the dataset).")] = False,
) -> None:
    """Remove a cache folder, or with --leftovers only the files its manifest does not reference.

    Refuses a folder that is not a ctslice cache (nor empty), so that a mistyped path is never deleted. Only
    entries the cache created are removed; anything else is left in place and listed.

    Example: ctslice cache clean /fast/cache --leftovers
    """
    with user_errors():
        from ..cache.cleanup import check_removable, remove_cache, remove_leftovers
        from ..cache.location import is_remote
        from ..cache.lock import cache_lock
        from ..cache.manifest import read_manifest
        from ..errors import CtsliceError

        if is_remote(cache):
            raise CtsliceError(f"{cache}: `cache clean` works on local caches only (a preprocess removes a store's "
                               "superseded objects; delete a whole prefix with the store's own tools)")
        cache = Path(cache)
        if leftovers:
            read_manifest(cache)  # a clear error for a folder that is not a cache, before taking its lock
            with cache_lock(cache):
                result = remove_leftovers(cache, read_manifest(cache))
            for path in result.removed:
                _say(f"removed {path}")
            for reason in result.kept:
                _say(f"not removed: {reason}")
            _say(f"{cache}: {len(result.removed)} leftover(s) removed" +
                 (f", {len(result.kept)} could not be removed" if result.kept else ""))
            if result.kept:
                raise typer.Exit(1)
            return
        check_removable(cache)
        if not yes:
            typer.confirm(f"Remove the cache {cache} (the entries ctslice created in it)?", abort=True)
        result = remove_cache(cache)
        for reason in result.kept:
            _say(f"kept: {reason}")
        if cache.exists():
            _say(f"{cache}: cache entries removed, the folder kept ({len(result.kept)} kept: not created by "
                 "ctslice, or not removable)")
        else:
            _say(f"{cache}: removed")


@cache_app.command()
def show(
    cache: CacheArg,
    subject: Annotated[str, typer.Argument(help="Subject id (as in `cache info` or splits.csv).")],
    slice_: Annotated[Optional[int], typer.Option("--slice", help="One slice index along --axis [default: a "
                                                                  "montage of evenly spaced slices].")] = None,
    axis: Annotated[str, typer.Option(help="axial, coronal or sagittal (any case).")] = "axial",
    window: Annotated[str, typer.Option(help="soft (400/40), bone (1800/400), lung (1500/-600) or W,L in "
                                             "HU.")] = "soft",
    out_png: Annotated[Optional[Path], typer.Option("--out", help="PNG to write (.png is added to a name "
                                                                  "without suffix), or an existing folder to "
                                                                  "write the default name in [default: "
                                                                  "SUBJECT-AXIS[-SLICE].png].")] = None,
    storage_option: StorageOptions = None,
) -> None:
    """Draw a cached subject's CT with its labels as a coloured overlay and a legend of the structures present:
    the first thing to look at after preprocessing a new dataset (orientation, labels, windowing).

    Example: ctslice cache show /fast/cache s0011 --axis coronal --window bone --out s0011.png
    """
    with user_errors():
        from ..view.show import show_subject

        _say(f"wrote {show_subject(opened(cache, storage_option), subject, out_png, slice_, axis, window)}")


@cache_app.command()
def stats(
    cache: CacheArg,
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="Folder for structures.png and dataset.png "
                                                                  "[default: CACHE-stats beside the cache].")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest's statistics as JSON.")] = False,
    storage_option: StorageOptions = None,
) -> None:
    """Dataset statistics from the manifest: per structure the subjects containing it, voxels and volume;
    foreground HU statistics (nnU-Net's CT normalisation); spacing; and figures of them.

    Example: ctslice cache stats /fast/cache --out /tmp/cache-stats
    """
    with user_errors():
        from ..cache.manifest import read_manifest
        from ..view.stats import figure_folder, structure_rows, write_figures

        cache = opened(cache, storage_option)
        manifest = read_manifest(cache)
        st = manifest.statistics
        if as_json:
            typer.echo(json.dumps(st, indent=1))
            return
        out_dir = figure_folder(cache, out_dir)
        n = max(st.get("subjects", 0), 1)
        lines = [f"{'index':>5}  {'structure':<32} {'subjects':>8} {'%':>6} {'voxels':>13} {'ml':>11}"]
        for i, name, subjects, voxels, ml in structure_rows(manifest):
            lines.append(f"{i:>5}  {name:<32} {subjects:>8} {subjects / n:>6.0%} {voxels:>13,} {ml:>11,.1f}")
        hu = st.get("intensity", {})
        if hu.get("voxels"):
            lines.append(f"foreground HU: mean {hu['mean']:.1f}, std {hu['std']:.1f}, 0.5-99.5% {hu['p00_5']} to "
                         f"{hu['p99_5']}, range {hu['min']} to {hu['max']} ({hu['voxels']:,} voxels)")
        spacing = st.get("spacing", {})
        if spacing.get("slice_thickness"):
            lines.append(f"original spacing: slice thickness {spacing['slice_thickness'][0]}-"
                         f"{spacing['slice_thickness'][1]} mm, in-plane {spacing['in_plane'][0]}-"
                         f"{spacing['in_plane'][1]} mm")
        _say("\n".join(lines))
        for path in write_figures(cache, out_dir, manifest):
            _say(f"wrote {path}")

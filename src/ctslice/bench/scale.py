"""What a run costs when the dataset is large and little changed: the fixed costs of preprocess, `cache status`,
`cache info` and `SliceDataset` at N subjects, and how they grow from the smallest N to the largest.

The simulated dataset is cheap: a few tiny synthetic subjects (synthetic.py) are written once and every simulated
subject is a folder of hard links to one of them, under its own name. Hard-linked files share their inode, so a
subject that is changed gets its own copy of the CT first (`_unshare`) and only then new bytes.

The cache is seeded as cheaply (`seed_cache`): the template subjects are preprocessed once, and each simulated
subject's folder is made of hard links to its template's chunk files plus its own group metadata holding its own
record (id, input files, key), exactly what preprocess would have written for it. The seed is written as a
format-2 manifest (records inline, no index), so the first real preprocess run upgrades it (cache/upgrade.py) and
builds the slice index from every subject: that run is the "build" printed, and it checks that all N subjects are
unchanged. Preprocessing 10,000 subjects one by one would take ~25 minutes here, for nothing the timings need.
Every timed operation is the library call the CLI makes (no interpreter start-up in the numbers), in this
process, with nothing else changed in between.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..cache import owner, store
from ..cache.info import cache_info
from ..cache.layout import INDEX_DIR, MANIFEST_NAME, READERS_DIR, RECORDS_DIR
from ..cache.manifest import UPGRADABLE, canonical_checksum, read_manifest
from ..cache.sizes import folder_size
from ..config import PreprocessConfig
from ..errors import CtsliceError
from ..preprocess.fingerprint import subject_key
from ..preprocess.run import run_preprocess
from ..preprocess.status import cache_status
from ..synthetic import DemoSpec, generate_demo_dataset
from .incremental import modify_subject

OPERATIONS = ("no_change", "one_changed", "one_added", "one_removed", "status", "info", "dataset")
LABELS = {"no_change": "preprocess, nothing changed", "one_changed": "preprocess, 1 subject changed",
          "one_added": "preprocess, 1 subject added", "one_removed": "preprocess, 1 subject removed",
          "status": "cache status", "info": "cache info", "dataset": "SliceDataset(train) created"}
TEMPLATES = 4


@dataclass
class ScaleResult:
    subjects: int
    build_s: float
    """The first preprocess run over the seeded cache: the one-time upgrade, the index built from every subject,
    every subject found unchanged (not a target)."""
    seconds: dict[str, float] = field(default_factory=dict)
    """Operation (OPERATIONS) -> wall-clock seconds."""
    cpu: dict[str, float] = field(default_factory=dict)
    """Operation -> CPU seconds of this process: less at the mercy of other jobs on a shared machine than the wall
    clock (it leaves out waiting for the disk, and for the CPU)."""
    bookkeeping_bytes: int = 0
    """manifest.json, record files, slice index and lease files."""


def simulate_dataset(templates: Path, out: Path, n: int) -> list[str]:
    """`n` subjects s000000, s000001, ... under `out`, each a folder of hard links to a template subject's files."""
    sources = sorted(p for p in templates.iterdir() if p.is_dir())
    files = [[f.relative_to(src) for f in src.rglob("*") if f.is_file()] for src in sources]
    ids = []
    for i in range(n):
        sid = f"s{i:06d}"
        link_subject(sources[i % len(sources)], files[i % len(sources)], out / sid)
        ids.append(sid)
    return ids


def link_subject(source: Path, files: list[Path], target: Path) -> None:
    for rel in files:
        (target / rel).parent.mkdir(parents=True, exist_ok=True)
        os.link(source / rel, target / rel)


def _unshare(path: Path) -> None:
    """Give a hard-linked file its own inode (a copy in its place), so that writing it changes only this subject."""
    tmp = path.with_name(path.name + ".copy")
    shutil.copy2(path, tmp)
    os.replace(tmp, path)


def bookkeeping_bytes(cache: Path) -> int:
    parts = [cache / MANIFEST_NAME, cache / RECORDS_DIR, cache / INDEX_DIR, cache / READERS_DIR]
    return sum(folder_size(p).bytes for p in parts)


def _timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall, CPU) seconds of fn()."""
    start, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - start, time.process_time() - cpu


def _expect(report, **counts: int) -> None:
    got = {name: len(getattr(report, name)) for name in counts}
    if got != counts or report.failed:
        raise CtsliceError(f"benchmark run did {got} (expected {counts}), failed {report.failed}")


def seed_cache(template_cache: Path, cache: Path, data: Path, ids: list[str]) -> None:
    """A format-2 cache of the simulated subjects `ids` (subject i made from template i % templates), each folder
    hard links to its template's arrays plus its own zarr.json with its own record."""
    template = read_manifest(template_cache)
    sources = [template.subjects[sid] for sid in sorted(template.subjects)]
    owner.mark(cache)
    subjects = {}
    for i, sid in enumerate(ids):
        src = sources[i % len(sources)]
        record = src.to_json()
        record["id"] = sid
        record["files"] = {f"{sid}/{name.split('/', 1)[1]}": fp for name, fp in src.files.items()}
        record["key"] = subject_key(template.settings.hash, record["files"])
        record["path"] = store.subject_folder(sid, record["key"])
        _link_folder(template_cache / src.path, cache / record["path"], record)
        subjects[sid] = record
    data_json = json.loads((template_cache / MANIFEST_NAME).read_text())
    data_json.update(format_version=UPGRADABLE, subjects=subjects, splits={"train": [], "val": [], "test": []},
                     slice_index=None, totals={}, statistics={}, failed={},
                     dataset={**data_json["dataset"], "root": str(data)})
    data_json["checksum"] = canonical_checksum(data_json)
    (cache / MANIFEST_NAME).write_text(json.dumps(data_json))


def _link_folder(source: Path, target: Path, record: dict) -> None:
    for folder, _, names in os.walk(source):
        out = target / Path(folder).relative_to(source)
        out.mkdir(parents=True, exist_ok=True)
        for name in names:
            if Path(folder) == source and name == "zarr.json":
                group = json.loads((source / name).read_text())
                group["attributes"]["record"] = record
                (out / name).write_text(json.dumps(group))
            else:
                os.link(Path(folder) / name, out / name)


def measure(templates: Path, template_cache: Path, workdir: Path, n: int, cfg: PreprocessConfig) -> ScaleResult:
    """Build a cache of `n` simulated subjects, then time each operation once, in OPERATIONS order."""
    from ..data.dataset import SliceDataset

    data, cache = workdir / f"data{n}", workdir / f"cache{n}"
    ids = simulate_dataset(templates, data, n)
    seed_cache(template_cache, cache, data, ids)
    result = ScaleResult(n, _timed(lambda: _expect(run_preprocess(data, cache, cfg), processed=0, unchanged=n))[0])

    def measured(name: str, fn: Callable[[], object]) -> None:
        result.seconds[name], result.cpu[name] = _timed(fn)

    measured("no_change", lambda: _expect(run_preprocess(data, cache, cfg), processed=0, removed=0))
    _unshare(data / ids[n // 2] / "ct.nii.gz")
    modify_subject(data, ids[n // 2])
    measured("one_changed", lambda: _expect(run_preprocess(data, cache, cfg), processed=1))
    source = data / ids[0]
    link_subject(source, [f.relative_to(source) for f in source.rglob("*") if f.is_file()], data / "s_added")
    measured("one_added", lambda: _expect(run_preprocess(data, cache, cfg), processed=1))
    shutil.rmtree(data / ids[1])
    measured("one_removed", lambda: _expect(run_preprocess(data, cache, cfg), processed=0, removed=1))
    measured("status", lambda: cache_status(cache))
    measured("info", lambda: cache_info(cache))
    measured("dataset", lambda: SliceDataset(cache, "train").reader.close())
    result.bookkeeping_bytes = bookkeeping_bytes(cache)
    return result


def bench_scale(subjects: list[int], workers: int = 0, workdir: Path | None = None, size: int = 16,
                slices: tuple[int, int] = (4, 6), keep: bool = False,
                progress: Callable[[ScaleResult], None] | None = None) -> list[ScaleResult]:
    """Measure each N of `subjects` (smallest first); `progress` gets each result as it is done."""
    if not subjects or min(subjects) < 4:
        raise CtsliceError(f"need subject counts of at least 4, got {subjects}")
    cfg = PreprocessConfig(spacing=None, size=size, workers=workers)
    tmp = Path(tempfile.mkdtemp(prefix="ctslice-bench-scale-", dir=workdir))
    results = []
    try:
        generate_demo_dataset(tmp / "templates", DemoSpec(subjects=TEMPLATES, size=size, slices=slices,
                                                          meta_csv=False, seed=1))
        _expect(run_preprocess(tmp / "templates", tmp / "template-cache", cfg), processed=TEMPLATES)
        for n in sorted(subjects):
            results.append(measure(tmp / "templates", tmp / "template-cache", tmp, n, cfg))
            if progress:
                progress(results[-1])
            if not keep:
                shutil.rmtree(tmp / f"data{n}")
                shutil.rmtree(tmp / f"cache{n}")
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return results

"""How fast training can read slice pairs: the naive NIfTI way, the ctslice dataset and DataLoader, and the
same DataLoader over an uncompressed .npy memmap of the same slices (the practical ceiling).

`run_loader_benchmark` returns a plain dict (the `--json` output); `format_table` turns it into lines.
All ways read the same slices of one split, in the same random order, from a warm page cache.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from ..cache.info import RAW_BYTES_PER_PIXEL, folder_size
from ..cache.manifest import read_manifest
from ..config import LoaderConfig, PreprocessConfig
from ..errors import CacheError, CtsliceError
from ..data.dataset import SliceBatch, SliceDataset, batch_buffers, single_threaded_blosc
from ..data.loader import RingLoader, loader_kwargs
from ..data.ring import BatchRing

Log = Callable[[str], None]


# --- The benchmark cache and its raw copy -------------------------------------------------------------------------

def ensure_bench_cache(out: Path, subjects: int, size: int, slices: tuple[int, int], seed: int = 0,
                       log: Log | None = None) -> Path:
    """Demo data and its cache under `out`, generated once and reused (preprocess skips unchanged subjects)."""
    from ..preprocess.run import run_preprocess
    from .demo import benchmark_spec, ensure_demo_dataset

    tag = f"{size}px-{subjects}x{slices[0]}-{slices[1]}-seed{seed}"
    data, cache = Path(out) / f"demo-{tag}", Path(out) / f"loader-cache-{tag}"
    if log:
        log(f"demo data {data} (generated once) ...")
    ensure_demo_dataset(data, benchmark_spec(subjects, size, slices, seed))
    if log:
        log(f"cache {cache} (built once) ...")
    report = run_preprocess(data, cache, PreprocessConfig(size=size))
    if not report.ok:
        raise CtsliceError(f"{cache}: benchmark cache build failed: {report.failed}")
    return cache


def ensure_sharded_copy(cache: Path, out: Path, log: Log | None = None) -> Path:
    """The same cache in the "shards" layout (config.LAYOUTS) under `out`, built once from the cache's dataset with
    its settings (preprocess skips it when it is up to date), so both layouts are read side by side."""
    import dataclasses

    from ..preprocess.run import run_preprocess

    manifest = read_manifest(cache)
    twin = Path(out) / f"{Path(cache).name}-shards"
    if log:
        log(f"the same cache in the shards layout: {twin} (built once) ...")
    cfg = dataclasses.replace(manifest.settings.config(), layout="shards")
    report = run_preprocess(Path(manifest.dataset.get("root", "")), twin, cfg)
    if not report.ok:
        raise CtsliceError(f"{twin}: sharded benchmark cache build failed: {report.failed}")
    return twin


def ensure_npy_copy(ds: SliceDataset, folder: Path) -> tuple[Path, Path]:
    """image.npy (N, k, H, W) int16 and label.npy (N, H, W) uint8: the dataset's items, uncompressed, in order.
    Rewritten only when the cache (its slice index), split or context change; a stamp written last marks it
    complete."""
    folder = Path(folder)
    image_path, label_path, stamp = folder / "image.npy", folder / "label.npy", folder / "stamp.json"
    wanted = json.dumps({"cache": str(ds.reader.cache.resolve()), "index": ds.reader.manifest.slice_index,
                         "split": ds.split, "k": ds.context_slices, "n": len(ds)})
    if stamp.is_file() and stamp.read_text() == wanted:
        return image_path, label_path
    folder.mkdir(parents=True, exist_ok=True)
    stamp.unlink(missing_ok=True)
    first = ds[0]
    images = np.lib.format.open_memmap(image_path, "w+", np.int16, (len(ds), *first["image"].shape))
    labels = np.lib.format.open_memmap(label_path, "w+", np.uint8, (len(ds), *first["label"].shape))
    for start in range(0, len(ds), 64):
        items = ds.__getitems__(list(range(start, min(start + 64, len(ds)))))
        for j, item in enumerate(items):
            images[start + j] = item["image"].numpy()
            labels[start + j] = item["label"].numpy()
    images.flush()
    labels.flush()
    del images, labels
    stamp.write_text(wanted)
    return image_path, label_path


class NpySliceDataset(Dataset):
    """The ceiling: the same items as SliceDataset, copied from uncompressed memmaps into the same batch buffers
    (`__getitems__`), so the two DataLoaders differ only in where the bytes come from."""

    def __init__(self, image_path: Path, label_path: Path):
        self.paths = (str(image_path), str(label_path))
        self._arrays: tuple[np.ndarray, np.ndarray] | None = None  # opened lazily in each process
        self._len = len(np.load(image_path, mmap_mode="r"))

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_arrays": None}  # (the ring, when set, goes along: workers decode into it)

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, i: int) -> dict:
        return self.__getitems__([i])[0]

    def _open(self) -> tuple[np.ndarray, np.ndarray]:
        if self._arrays is None:
            self._arrays = tuple(np.load(p, mmap_mode="r") for p in self.paths)
        return self._arrays

    def __getitems__(self, indices: list[int]) -> SliceBatch:
        images_in, labels_in = self._open()
        images, labels, token = batch_buffers(self.ring, len(indices), images_in.shape[1:], labels_in.shape[1:])
        image_out, label_out = images.numpy(), labels.numpy()
        for j, i in enumerate(indices):
            image_out[j] = images_in[i]
            label_out[j] = labels_in[i]
        return SliceBatch(images, labels, [0] * len(indices), [int(i) for i in indices], token)

    ring: BatchRing | None = None

    def make_ring(self, workers: int, slots: int, batch_size: int) -> BatchRing:
        images_in, labels_in = self._open()
        return BatchRing(workers, slots, batch_size, images_in.shape[1:], labels_in.shape[1:])


def npy_dataset(ds: SliceDataset, out: Path) -> NpySliceDataset:
    """The .npy ceiling of `ds` (its copy made once under `out`)."""
    folder = Path(out) / "loader-npy" / f"{ds.reader.cache.name}-{ds.split}-k{ds.context_slices}"
    return NpySliceDataset(*ensure_npy_copy(ds, folder))


# --- The naive way ------------------------------------------------------------------------------------------------

def naive_pair(data_root: Path, masks: list[str], ct: str, z: int) -> tuple[np.ndarray, np.ndarray]:
    """What the original training script did per sample: load the CT and every mask file, take one slice."""
    import nibabel as nib

    volume = np.asanyarray(nib.load(data_root / ct).dataobj)
    z = min(z, volume.shape[2] - 1)
    label = np.zeros(volume.shape[:2], np.uint8)
    for index, mask_file in enumerate(masks, start=1):
        mask = np.asanyarray(nib.load(data_root / mask_file).dataobj)
        label[mask[:, :, z] > 0] = index
    return volume[:, :, z].astype(np.int16), label


# --- Measuring ------------------------------------------------------------------------------------------------

def _worker_memory(pids: list[int]) -> list[dict[str, float]]:
    """Peak resident memory (VmHWM, Linux) and current unique memory (USS) of each worker, in MB."""
    import psutil

    rows = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            uss = proc.memory_full_info().uss
            peak = proc.memory_info().rss
            status = Path(f"/proc/{pid}/status")
            if status.is_file():
                line = next(ln for ln in status.read_text().splitlines() if ln.startswith("VmHWM:"))
                peak = int(line.split()[1]) * 1024
            rows.append({"peak_rss_mb": peak / 2**20, "uss_mb": uss / 2**20})
        except (psutil.Error, OSError, StopIteration):
            continue
    return rows


def _time_items(ds: Dataset, order: list[int]) -> tuple[float, float]:
    """(seconds, CPU seconds) to read the items one by one (each dropped before the next, as a training step
    would)."""
    ds[order[0]]
    start, cpu = time.perf_counter(), time.process_time()
    for i in order:
        ds[i]
    return time.perf_counter() - start, time.process_time() - cpu


def _cpu_seconds(pids: list[int]) -> list[float]:
    """User + system CPU seconds each process has used so far (0 for one that is gone)."""
    import psutil

    seconds = []
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
            seconds.append(times.user + times.system)
        except psutil.Error:
            seconds.append(0.0)
    return seconds


def _time_loader(ds: Dataset, order: list[int], cfg: LoaderConfig, batches: int) -> dict:
    """For `batches` batches after warm-up (worker start and queues filled): seconds, pairs, worker memory, CPU
    seconds of the readers (the workers, or this process without them), each worker's CPU seconds and this
    (main) process's CPU seconds (with workers: what it spends receiving and unpacking batches)."""
    import psutil

    warmup = 2 * max(cfg.workers, 1) + 1
    need = (warmup + batches) * cfg.batch_size
    sampler = (order * (need // len(order) + 1))[:need]
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    loader = RingLoader(ds, sampler=sampler, **loader_kwargs(cfg))
    it = iter(loader)
    for _ in range(warmup):
        next(it)
    workers = [p.pid for p in psutil.Process().children(recursive=True) if p.pid not in before]
    workers_at, main_at = _cpu_seconds(workers), time.process_time()
    pairs, start = 0, time.perf_counter()
    for batch in it:
        pairs += len(batch["label"])
    seconds = time.perf_counter() - start
    main = time.process_time() - main_at
    per_worker = [b - a for a, b in zip(workers_at, _cpu_seconds(workers))]
    memory = _worker_memory(workers)
    del it, loader
    return {"seconds": seconds, "pairs": pairs, "memory": memory, "cpu": sum(per_worker) if workers else main,
            "worker_cpu": per_worker, "main_cpu": main if workers else None}


def _entry(name: str, kind: str, workers: int, pairs: int, seconds: float, memory: list | None = None,
           cpu: float | None = None, worker_cpu: list[float] | None = None, main_cpu: float | None = None,
           batch_size: int = 1) -> dict:
    """One row. CPU per pair of each worker assumes the DataLoader's round robin: each made pairs / workers."""
    rate = pairs / seconds if seconds > 0 else float("nan")
    return {"name": name, "kind": kind, "workers": workers, "pairs": pairs, "seconds": round(seconds, 4),
            "pairs_per_s": rate, "pairs_per_s_per_worker": rate / max(workers, 1),
            "cpu_us_per_pair": cpu / pairs * 1e6 if cpu is not None and pairs else None,
            "worker_cpu_us_per_pair": [c / (pairs / workers) * 1e6 for c in worker_cpu or []] if pairs else [],
            "main_cpu_us_per_batch": main_cpu / (pairs / batch_size) * 1e6 if main_cpu is not None and pairs
            else None,
            "worker_memory": memory or []}


def run_loader_benchmark(cache: Path, out: Path, *, split: str = "train", worker_counts: tuple[int, ...] = (0, 1, 2),
                         batch_size: int = 16, batches: int = 48, samples: int = 1000, naive_samples: int = 3,
                         context_slices: int = 1, seed: int = 0, rounds: int = 3, sharded: Path | None = None,
                         log: Log | None = None) -> dict:
    """Measure every way of reading on the same slices of `split`, each the best of `rounds` rounds taken in turn
    with the ways it is compared with; returns the results as a JSON-able dict. `sharded`: the same cache in the
    "shards" layout (ensure_sharded_copy), read beside it in every row."""
    with single_threaded_blosc():  # as in loader workers: one core per reader, for every row alike
        return _measure(cache, out, split, worker_counts, batch_size, batches, samples, naive_samples,
                        context_slices, seed, rounds, sharded, log)


def _measure(cache: Path, out: Path, split: str, worker_counts: tuple[int, ...], batch_size: int, batches: int,
             samples: int, naive_samples: int, context_slices: int, seed: int, rounds: int, sharded: Path | None,
             log: Log | None) -> dict:
    ds = SliceDataset(cache, split, context_slices)
    ways = [("ctslice", "", ds)]
    if sharded is not None:
        twin = SliceDataset(sharded, split, context_slices)
        if len(twin) != len(ds):
            raise CacheError(f"{sharded}: holds {len(twin)} {split} slices, {cache} {len(ds)}: not the same cache")
        ways.append(("ctslice (shards)", "shards_", twin))
    ways_npy = [*ways, (".npy memmap", "npy_", None)]
    manifest = read_manifest(cache)
    if len(ds) == 0:
        raise CacheError(f"{cache}: split {split!r} has no slices to read")
    order = np.random.default_rng(seed).permutation(len(ds)).tolist()
    shapes = [r.shape for r in manifest.subjects.values()]
    raw_bytes = sum(s * h * w for s, h, w in shapes) * RAW_BYTES_PER_PIXEL
    result = {"cache": str(cache), "split": split, "split_slices": len(ds), "cache_slices": len(ds.reader),
              "slice_shape": list(shapes[0][1:]) if shapes else [], "context_slices": context_slices,
              "batch_size": batch_size, "rounds": rounds, "cores": len(os.sched_getaffinity(0)),
              "pinned": loader_kwargs(LoaderConfig(pin_memory=True))["pin_memory"],
              "cache_bytes": folder_size(Path(cache)).disk_bytes, "raw_bytes": raw_bytes, "results": []}
    add = result["results"].append

    data_root = Path(manifest.dataset.get("root", ""))
    if naive_samples and data_root.is_dir():
        from ..preprocess.sources import discover

        if log:
            log(f"naive: {naive_samples} samples, each loading a CT and all its masks ...")
        sources = {s.id: s for s in discover(data_root).subjects}
        picks = [ds.locate(i) for i in order[:naive_samples]]
        start = time.perf_counter()
        for s, z in picks:
            src = sources[ds.reader.subjects[s]]
            naive_pair(data_root, [f for _, f in src.masks], src.image, z)
        add(_entry("naive: nibabel CT + all masks per sample", "naive", 0, len(picks), time.perf_counter() - start))

    if log:
        log(f"raw .npy copy of the {len(ds)} {split} slices (written once) ...")
    npy = npy_dataset(ds, out)
    sample = order[:samples]
    if log:
        log(f"single process: {len(sample)} pairs each, {rounds} alternating rounds ...")
    ways_npy = [(name, prefix, dataset or npy) for name, prefix, dataset in ways_npy]
    for (name, prefix, _), (seconds, cpu) in zip(ways_npy, _best_rounds(rounds, [
            lambda d=d: _time_items(d, sample) for _, _, d in ways_npy], key=lambda t: t[0])):
        add(_entry(f"{name} dataset, one process", f"{prefix}dataset", 0, len(sample), seconds, cpu=cpu))
    for workers in worker_counts:
        cfg = LoaderConfig(batch_size=batch_size, workers=workers, seed=seed, context_slices=context_slices)
        if log:
            log(f"DataLoader, {workers} workers: {batches} batches of {batch_size} each, {rounds} alternating rounds ...")
        for (name, prefix, _), t in zip(ways_npy, _best_rounds(rounds, [
                lambda d=d: _time_loader(d, order, cfg, batches) for _, _, d in ways_npy], key=lambda t: t["seconds"])):
            add(_entry(f"{name} DataLoader, {workers} workers", f"{prefix}loader", workers, t["pairs"], t["seconds"],
                       t["memory"], t["cpu"], t["worker_cpu"], t["main_cpu"], batch_size))
    result.update(_ratios(result["results"]))
    return result


def _best_rounds(rounds: int, measures: list[Callable[[], object]], key: Callable) -> list:
    """Each measurement's least disturbed result (lowest `key`) over `rounds` rounds that take them in turn, so
    that the ways compared see the same moments of a shared machine's load, and a burst of another job's work
    slows one round of each rather than all rounds of one."""
    best: list = [None] * len(measures)
    for _ in range(max(rounds, 1)):
        for i, measure in enumerate(measures):
            got = measure()
            if best[i] is None or key(got) < key(best[i]):
                best[i] = got
    return best


def _ratios(results: list[dict]) -> dict:
    def rate(kind: str, workers: int | None = None) -> float | None:
        rows = [r for r in results if r["kind"] == kind and (workers is None or r["workers"] == workers)]
        return rows[0]["pairs_per_s"] if rows else None

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    loaders = sorted({r["workers"] for r in results if r["kind"] == "loader"})
    ratios = {"dataset_vs_npy": ratio(rate("dataset"), rate("npy_dataset")),
              "loader_vs_npy_loader": {str(w): ratio(rate("loader", w), rate("npy_loader", w)) for w in loaders},
              "dataset_vs_naive": ratio(rate("dataset"), rate("naive"))}
    if rate("shards_dataset") is not None:  # the same slices read from the "shards" layout
        ratios["shards_vs_slices"] = {"dataset": ratio(rate("shards_dataset"), rate("dataset")),
                                      **{f"{w} workers": ratio(rate("shards_loader", w), rate("loader", w))
                                         for w in loaders}}
    return ratios


# --- Output ---------------------------------------------------------------------------------------------------

TARGETS = {"dataset_vs_npy": 0.50, "loader_vs_npy_loader": 0.95, "dataset_vs_naive": 1000.0}
"""Issue 19's targets; the DataLoader one applies with workers (in one process it is the dataset's, 0.5)."""


def format_table(result: dict) -> list[str]:
    """The human-readable report: one row per way of reading, then sizes and ratios against the targets."""
    h, w = result["slice_shape"] or ("?", "?")
    lines = [f"loader benchmark: {result['cache']}, split {result['split']} ({result['split_slices']} of "
             f"{result['cache_slices']} slices, {h}x{w}, k={result['context_slices']}), batch {result['batch_size']}, "
             f"best of {result.get('rounds', 1)} alternating rounds, "
             f"{result['cores']} cores, pinned memory {'on' if result['pinned'] else 'off (no CUDA)'}",
             f"{'way of reading':44s} {'workers':>7s} {'pairs/s':>10s} {'per worker':>10s} {'CPU us/pair':>11s}"
             f" {'peak RSS MB':>12s} {'USS MB':>7s}"]
    for r in result["results"]:
        memory = r["worker_memory"]
        peak = "/".join(f"{m['peak_rss_mb']:.0f}" for m in memory) or "-"
        uss = "/".join(f"{m['uss_mb']:.0f}" for m in memory) or "-"
        cpu = f"{r['cpu_us_per_pair']:.0f}" if r.get("cpu_us_per_pair") is not None else "-"
        lines.append(f"{r['name']:44s} {r['workers']:7d} {r['pairs_per_s']:10.1f} {r['pairs_per_s_per_worker']:10.1f}"
                     f" {cpu:>11s} {peak:>12s} {uss:>7s}")
    cache_b, raw_b = result["cache_bytes"], result["raw_bytes"]
    lines.append(f"cache on disk {cache_b / 2**20:,.0f} MiB, raw {raw_b / 2**20:,.0f} MiB "
                 f"(int16 image + uint8 label): {raw_b / max(cache_b, 1):.2f}x smaller")

    def verdict(value: float | None, target: float) -> str:
        if value is None:
            return "n/a"
        shown = f"{value:,.0f}" if value >= 100 else f"{value:.4f}"  # 4 decimals: 0.4996 must not read as 0.5
        return f"{shown} (target >= {target:g}: {'met' if value >= target else 'NOT met'})"

    lines.append(f"dataset / .npy dataset (one process): "
                 f"{verdict(result['dataset_vs_npy'], TARGETS['dataset_vs_npy'])}")
    for workers, value in result["loader_vs_npy_loader"].items():
        target = TARGETS["loader_vs_npy_loader"] if int(workers) else TARGETS["dataset_vs_npy"]
        lines.append(f"DataLoader / .npy DataLoader, {workers} workers: {verdict(value, target)}")
    for r in result["results"]:  # where a DataLoader's CPU goes: each worker, and the main process receiving
        if r["kind"] in ("loader", "npy_loader") and r["workers"] and r.get("worker_cpu_us_per_pair"):
            each = "/".join(f"{c:.0f}" for c in r["worker_cpu_us_per_pair"])
            lines.append(f"{r['name']}: CPU us/pair in each worker {each}; main process "
                         f"{r['main_cpu_us_per_batch']:,.0f} us/batch of {result['batch_size']}")
    worker_rows = [r for r in result["results"] if r["kind"] == "loader" and r["workers"] and r.get("cpu_us_per_pair")]
    if worker_rows:
        r = worker_rows[-1]
        lines.append(f"CPU per pair in a worker ({r['workers']} workers): {r['cpu_us_per_pair']:.0f} us, so one "
                     f"worker feeds at most {1e6 / r['cpu_us_per_pair']:,.0f} pairs/s: workers per GPU = GPU slices/s "
                     f"x {r['cpu_us_per_pair']:.0f} us (plus headroom)")
    lines.append(f"dataset / naive: {verdict(result['dataset_vs_naive'], TARGETS['dataset_vs_naive'])}")
    if result.get("shards_vs_slices"):
        lines.append("shards / slices layout, same slices: " + ", ".join(
            f"{way} {value:.2f}" for way, value in result["shards_vs_slices"].items() if value is not None))
    return lines

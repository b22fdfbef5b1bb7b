"""build_loader: batches in stored dtypes, the same samples with fork and spawn workers, sharding, evaluation order."""

from __future__ import annotations

from pathlib import Path

import numcodecs.blosc
import numpy as np
import pytest
import torch
from conftest import TINY_SETTINGS

from ctslice.config import LoaderConfig
from ctslice.preprocess.run import run_preprocess
from ctslice.data.dataset import SliceDataset
from ctslice.data.loader import build_loader, seed_worker

CFG = LoaderConfig(batch_size=4, workers=0, prefetch_factor=2, oversample_fraction=0.5, context_slices=3, seed=7)


@pytest.fixture(scope="module")
def cache(_tiny_dataset_master, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("loader") / "cache"
    assert run_preprocess(_tiny_dataset_master, path, TINY_SETTINGS).ok
    return path


def _epochs(loader, epochs: int = 2) -> list[dict]:
    batches = []
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch)
        batches.extend(loader)
    return batches


def _same(a: list[dict], b: list[dict]) -> bool:
    return len(a) == len(b) and all(x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
                                    for x, y in zip(a, b))


def test_batches_hold_the_sampled_items_in_stored_dtypes(cache):
    loader = build_loader(cache, "train", CFG)
    ds = loader.dataset
    order = list(loader.sampler)
    batches = list(loader)
    assert len(batches) == -(-len(ds) // 4)
    first = batches[0]
    h, w = ds.reader.shapes[0, 1:]
    assert first["image"].dtype == torch.int16 and first["image"].shape == (4, 3, h, w)
    assert first["label"].dtype == torch.uint8 and first["label"].shape == (4, h, w)
    for j, i in enumerate(order[:4]):
        item = ds[i]
        assert torch.equal(first["image"][j], item["image"]) and torch.equal(first["label"][j], item["label"])
        assert (first["subject"][j], first["slice"][j]) == (item["subject"], item["slice"])


def test_items_by_negative_index_and_out_of_range_items(cache):
    ds = SliceDataset(cache, "train", context_slices=3)
    assert ds.slice_size == tuple(ds.reader.shapes[0, 1:].tolist())
    last, also_last = ds[len(ds) - 1], ds[-1]
    assert torch.equal(last["image"], also_last["image"]) and last["slice"] == also_last["slice"]
    for bad in (len(ds), -len(ds) - 1):
        with pytest.raises(IndexError, match=f"item {bad} out of range \\(train has {len(ds)} slices\\)"):
            ds.__getitems__([0, bad])


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_workers_give_the_same_samples_as_in_process(cache, context):
    reference = _epochs(build_loader(cache, "train", CFG))
    workers = 2 if context == "fork" else 1  # spawn starts a fresh interpreter per worker: keep it to one
    cfg = LoaderConfig(**{**CFG.__dict__, "workers": workers})
    loader = build_loader(cache, "train", cfg, multiprocessing_context=context)
    assert _same(_epochs(loader), reference)


def test_seed_changes_the_samples_and_evaluation_reads_every_slice_once(cache):
    a = list(build_loader(cache, "train", CFG))
    b = list(build_loader(cache, "train", LoaderConfig(**{**CFG.__dict__, "seed": 8})))
    assert not _same(a, b)
    ds = SliceDataset(cache, "val")
    seen = [(int(s), int(z)) for batch in build_loader(cache, "val", CFG, shuffle=False)
            for s, z in zip(batch["subject"], batch["slice"])]
    assert seen == [ds.locate(i) for i in range(len(ds))]


def test_ranks_get_equal_disjoint_shares_when_not_oversampling(cache):
    cfg = LoaderConfig(**{**CFG.__dict__, "oversample_fraction": 0.0})
    shares = [[(int(s), int(z)) for batch in build_loader(cache, "train", cfg, num_replicas=2, rank=r)
               for s, z in zip(batch["subject"], batch["slice"])] for r in range(2)]
    n = len(SliceDataset(cache, "train"))
    assert len(shares[0]) == len(shares[1]) == -(-n // 2)
    assert len(set(shares[0]) | set(shares[1])) == n


def test_worker_init_turns_blosc_threads_off():
    saved = numcodecs.blosc.use_threads
    try:
        numcodecs.blosc.use_threads = None
        seed_worker(0)
        assert numcodecs.blosc.use_threads is False
    finally:
        numcodecs.blosc.use_threads = saved


def test_building_and_reading_a_loader_in_process_leaves_the_callers_blosc_setting(cache, monkeypatch):
    seen = []
    decompress = numcodecs.blosc.decompress

    def watched(*args, **kwargs):
        seen.append(numcodecs.blosc.use_threads)
        return decompress(*args, **kwargs)

    monkeypatch.setattr(numcodecs.blosc, "decompress", watched)
    for caller in (None, True):  # numcodecs' adaptive default, and a caller who wants Blosc's threads
        monkeypatch.setattr(numcodecs.blosc, "use_threads", caller)
        loader = build_loader(cache, "train", CFG)  # workers=0: this process decodes
        assert numcodecs.blosc.use_threads is caller
        seen.clear()  # (opening the cache reads its slice index as the caller would)
        next(iter(loader))
        assert numcodecs.blosc.use_threads is caller and seen and set(seen) == {False}  # one thread while reading
        seen.clear()


def test_bench_loader_command_writes_every_way_of_reading(cache, tmp_path):
    import json

    from typer.testing import CliRunner

    from ctslice.cli import app

    out = tmp_path / "r.json"
    result = CliRunner().invoke(app, ["bench", "loader", "--cache", str(cache), "--out", str(tmp_path), "--workers",
                                      "0,1", "--batches", "2", "--samples", "8", "--naive", "1", "--rounds", "1", "--steps", "--json", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    kinds = {(r["kind"], r["workers"]) for r in data["results"]}
    assert kinds == {("naive", 0), ("dataset", 0), ("npy_dataset", 0), ("loader", 0), ("npy_loader", 0),
                     ("loader", 1), ("npy_loader", 1), ("shards_dataset", 0), ("shards_loader", 0),
                     ("shards_loader", 1)}  # the same slices in the shards layout, beside the slices one
    assert set(data["shards_vs_slices"]) == {"dataset", "0 workers", "1 workers"}
    assert "shards / slices layout" in result.output
    assert all(r["pairs_per_s"] > 0 for r in data["results"])
    assert data["cache_bytes"] > 0 and data["raw_bytes"] == sum(
        s * h * w * 3 for s, h, w in (r.shape for r in SliceDataset(cache).reader.manifest.subjects.values()))
    assert set(data["loader_vs_npy_loader"]) == {"0", "1"} and data["dataset_vs_npy"] > 0
    assert data["dataset_vs_naive"] > 1
    assert "dataset / naive" in result.output
    one_worker = [r for r in data["results"] if r["workers"] == 1]  # where a DataLoader's CPU goes, printed
    assert all(len(r["worker_cpu_us_per_pair"]) == 1 and r["main_cpu_us_per_batch"] > 0 for r in one_worker)
    assert "CPU us/pair in each worker" in result.output and "us/batch of 16" in result.output
    steps = {row["step"]: row["us_per_pair"] for row in data["steps"]}  # --steps: where a pair's time goes
    assert all(v > 0 for v in steps.values()) and "sum of the steps above" in result.output
    assert steps["sum of the steps above"] == pytest.approx(sum(v for k, v in steps.items() if ":" in k
                                                                and not k.startswith(".npy")))


# --- Reused batch buffers (data/ring.py) ----------------------------------------------------------------------

def _expected(ds: SliceDataset, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch as the per-slice reader API gives it (one chunk at a time, stacked): the old path's values."""
    from ctslice.data.dataset import context_window

    reader = ds.reader
    images = [reader.read_image(s, context_window(z, ds.context_slices, int(reader.shapes[s, 0])))
              for s, z in zip(batch["subject"].tolist(), batch["slice"].tolist())]
    labels = [reader.read_label(s, z) for s, z in zip(batch["subject"].tolist(), batch["slice"].tolist())]
    return torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(labels))


@pytest.mark.parametrize("workers", [0, 2])
def test_batches_hold_the_same_slices_and_values_as_the_per_slice_reader(cache, workers):
    cfg = LoaderConfig(**{**CFG.__dict__, "workers": workers, "persistent_workers": True})
    loader = build_loader(cache, "train", cfg)
    expected_order = []
    for epoch in range(2):
        loader.sampler.set_epoch(epoch)
        expected_order += [loader.dataset.locate(i) for i in loader.sampler]
        for batch in loader:  # each batch dropped before the next: workers keep reusing their ring slots
            assert batch.keys() == {"image", "label", "subject", "slice"}
            assert batch["subject"].dtype == batch["slice"].dtype == torch.int64
            images, labels = _expected(loader.dataset, batch)
            assert torch.equal(batch["image"], images) and torch.equal(batch["label"], labels)
            expected_order = expected_order[len(batch["slice"]):] if list(zip(
                batch["subject"].tolist(), batch["slice"].tolist())) == expected_order[:len(batch["slice"])] else None
            assert expected_order is not None, "batches out of the sampler's order"
    assert expected_order == []


def test_workers_never_overwrite_a_batch_the_caller_still_holds(cache, monkeypatch):
    """Batches kept for a while (the previous two, and every fifth for good) stay intact while the workers go on
    filling ring slots; with one slot per worker beyond what is in flight, reuse is frequent."""
    import ctslice.data.loader as loader_module
    import ctslice.data.ring as ring

    monkeypatch.setattr(loader_module, "RING_SPARE_SLOTS", 1)
    unpacked = []
    monkeypatch.setattr(ring.BatchRing, "unpack", lambda self, *a, _f=ring.BatchRing.unpack: unpacked.append(a)
                        or _f(self, *a))
    cfg = LoaderConfig(**{**CFG.__dict__, "workers": 2, "batch_size": 2, "prefetch_factor": 1,
                          "persistent_workers": True})
    loader = build_loader(cache, "train", cfg)
    held = []  # (batch, copy of it)
    for epoch in range(3):
        loader.sampler.set_epoch(epoch)
        for n, batch in enumerate(loader):
            held.append((batch, {k: v.clone() for k, v in batch.items()}))
            for kept, copy in held:
                assert all(torch.equal(kept[k], copy[k]) for k in copy)
            held = [h for i, h in enumerate(held) if i >= len(held) - 2 or i % 5 == 0]
    assert len({a[:2] for a in unpacked}) == 4 and len(unpacked) > 8  # 2 workers x 2 slots, each used again


def test_a_held_view_or_storage_keeps_its_slot(cache):
    """A slot is released only when nothing made from the batch is left: a view, a detached tensor or the bare
    storage each keep it."""
    cfg = LoaderConfig(**{**CFG.__dict__, "workers": 1, "batch_size": 2, "prefetch_factor": 1,
                          "persistent_workers": True})
    loader = build_loader(cache, "train", cfg)
    keeps = {"view": lambda b: b["image"][1], "detached": lambda b: b["label"].detach(),
             "storage": lambda b: torch.empty(0, dtype=torch.int16).set_(b["image"].untyped_storage())}
    for name, keep in keeps.items():
        it = iter(loader)
        first = next(it)
        kept = keep(first)
        copy = kept.clone()
        del first
        assert len(list(it)) > 2, name  # the rest of the epoch, read while only `kept` holds the first batch's slot
        assert torch.equal(kept, copy), name

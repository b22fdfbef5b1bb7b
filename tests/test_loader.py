"""build_loader: batches in stored dtypes, the same samples with fork and spawn workers, sharding, evaluation order."""

from __future__ import annotations

from pathlib import Path

import numcodecs.blosc
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
                                      "0,1", "--batches", "2", "--samples", "8", "--naive", "1", "--json", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    kinds = {(r["kind"], r["workers"]) for r in data["results"]}
    assert kinds == {("naive", 0), ("dataset", 0), ("npy_dataset", 0), ("loader", 0), ("npy_loader", 0),
                     ("loader", 1), ("npy_loader", 1)}
    assert all(r["pairs_per_s"] > 0 for r in data["results"])
    assert data["cache_bytes"] > 0 and data["raw_bytes"] == sum(
        s * h * w * 3 for s, h, w in (r.shape for r in SliceDataset(cache).reader.manifest.subjects.values()))
    assert set(data["loader_vs_npy_loader"]) == {"0", "1"} and data["dataset_vs_npy"] > 0
    assert data["dataset_vs_naive"] > 1
    assert "dataset / naive" in result.output

"""SliceDataset items against the stored arrays, 2.5D edges, batched reads; the class-aware sampler's rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_SETTINGS
from torch.utils.data import default_collate

from ctslice.cache import store
from ctslice.cache.manifest import read_manifest
from ctslice.errors import CacheError
from ctslice.preprocess.run import run_preprocess
from ctslice.data.dataset import SliceDataset, context_window
from ctslice.data.loader import collate_slices
from ctslice.data.sampler import ClassAwareSampler, class_pools, epoch_order, oversampled_positions


@pytest.fixture(scope="module")
def cache(_tiny_dataset_master, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("dataset") / "cache"
    assert run_preprocess(_tiny_dataset_master, path, TINY_SETTINGS).ok
    return path


def _stored(cache: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    manifest = read_manifest(cache)
    groups = {sid: store.open_subject(cache, r.path) for sid, r in manifest.subjects.items()}
    return {sid: (np.asarray(g["image"][...]), np.asarray(g["label"][...])) for sid, g in groups.items()}


# --- dataset --------------------------------------------------------------------------------------------------

def test_items_are_the_splits_slices_exactly(cache):
    manifest, stored = read_manifest(cache), _stored(cache)
    for split in ("train", "val"):
        ds = SliceDataset(cache, split)
        ids = manifest.splits[split]
        assert len(ds) == sum(manifest.subjects[sid].slices for sid in ids)
        seen = set()
        for i in range(len(ds)):
            item = ds[i]
            sid = ds.reader.subjects[item["subject"]]
            assert sid in ids
            image, label = stored[sid]
            assert item["image"].dtype == torch.int16 and item["image"].shape == (1, *image.shape[1:])
            assert item["label"].dtype == torch.uint8
            assert torch.equal(item["image"][0], torch.from_numpy(image[item["slice"]]))
            assert torch.equal(item["label"], torch.from_numpy(label[item["slice"]]))
            seen.add((sid, item["slice"]))
        assert len(seen) == len(ds)


def test_present_rows_describe_the_items(cache):
    ds = SliceDataset(cache, "train")
    assert ds.present.shape == (len(ds), len(ds.labels))
    for i in range(0, len(ds), 3):
        item = ds[i]
        assert np.array_equal(np.flatnonzero(ds.present[i]), np.unique(item["label"].numpy()))


def test_unknown_split_is_a_cache_error(cache):
    with pytest.raises(CacheError, match="no split 'holdout'.*train"):
        SliceDataset(cache, "holdout")
    with pytest.raises(ValueError, match="odd"):
        SliceDataset(cache, "train", context_slices=2)


def test_context_window_clamps_at_the_edges():
    assert context_window(0, 3, 10) == [0, 0, 1]
    assert context_window(9, 3, 10) == [8, 9, 9]
    assert context_window(5, 5, 10) == [3, 4, 5, 6, 7]
    assert context_window(1, 5, 3) == [0, 0, 1, 2, 2]
    assert context_window(4, 1, 10) == [4]


def test_25d_items_stack_neighbours_and_clamp(cache):
    stored = _stored(cache)
    ds = SliceDataset(cache, "train", context_slices=5)
    for i in range(len(ds)):
        item = ds[i]
        image, label = stored[ds.reader.subjects[item["subject"]]]
        z, n = item["slice"], len(image)
        assert item["image"].shape == (5, *image.shape[1:])
        for channel, zz in enumerate(range(z - 2, z + 3)):
            assert torch.equal(item["image"][channel], torch.from_numpy(image[min(max(zz, 0), n - 1)]))
        assert torch.equal(item["label"], torch.from_numpy(label[z]))  # the centre slice's label only


def test_batched_read_equals_items_and_collates_without_copy(cache):
    ds = SliceDataset(cache, "train", context_slices=3)
    indices = [5, 0, len(ds) - 1, 5, 17]
    items = ds.__getitems__(indices)
    batch = collate_slices(items)
    reference = default_collate([ds[i] for i in indices])
    assert batch.keys() == reference.keys()
    for key in batch:
        assert torch.equal(batch[key], reference[key]), key
    assert batch["image"].data_ptr() == items[0]["image"].data_ptr()  # the buffer itself, not a stacked copy
    # Items that do not tile one buffer are stacked as usual.
    mixed = collate_slices([ds[1], ds[2]])
    assert torch.equal(mixed["image"], default_collate([ds[1], ds[2]])["image"])


# --- sampler --------------------------------------------------------------------------------------------------

def _present(rows: int, structures: dict[int, range]) -> np.ndarray:
    present = np.zeros((rows, 1 + max(structures)), dtype=bool)
    present[:, 0] = True
    for column, where in structures.items():
        present[list(where), column] = True
    return present


def _order(present: np.ndarray, **kw) -> np.ndarray:
    args = dict(batch_size=16, fraction=0.5, seed=0, epoch=0) | kw
    return epoch_order(len(present), class_pools(present), **args)


def test_oversampled_positions_spread_the_fraction_over_batches():
    mask = oversampled_positions(100, 16, 0.3)
    per_batch = [int(mask[i:i + 16].sum()) for i in range(0, 100, 16)]
    assert all(c in (4, 5) for c in per_batch[:-1]) and sum(per_batch) == 30
    assert oversampled_positions(64, 16, 0.5).reshape(4, 16).sum(axis=1).tolist() == [8, 8, 8, 8]
    assert not oversampled_positions(50, 8, 0.0).any() and oversampled_positions(50, 8, 1.0).all()


def test_class_aware_fraction_is_honoured_in_every_batch():
    # Only rows 0..9 show any structure: every class-aware draw lands there; uniform draws (a permutation) hit
    # them at most 10 times per epoch.
    present = _present(1000, {1: range(0, 6), 2: range(4, 10)})
    order = _order(present, fraction=0.25)
    assert len(order) == 1000
    in_structures = order < 10
    assert 250 <= in_structures.sum() <= 260
    for start in range(0, 992, 16):
        assert in_structures[start:start + 16].sum() >= 4  # floor(0.25 * 16)
    assert in_structures[992:].sum() >= 2  # the last, partial batch of 8
    assert (_order(present, fraction=0.0) < 10).sum() == 10  # no oversampling: one pass over all rows


def test_structures_are_chosen_uniformly_not_by_frequency():
    present = _present(2000, {1: range(0, 1000), 2: range(1000, 1005)})  # a big and a tiny structure
    order = _order(present, fraction=1.0, batch_size=20)
    share_tiny = np.isin(order, range(1000, 1005)).mean()
    assert 0.43 < share_tiny < 0.57
    assert set(order) <= set(range(1005))


def test_order_is_deterministic_per_seed_and_epoch():
    present = _present(300, {1: range(0, 30), 2: range(100, 110), 3: range(250, 300)})
    assert np.array_equal(_order(present), _order(present))
    assert not np.array_equal(_order(present), _order(present, epoch=1))
    assert not np.array_equal(_order(present), _order(present, seed=1))
    sampler = ClassAwareSampler(present, batch_size=16, fraction=0.5, seed=0)
    first = list(sampler)
    assert first == list(sampler) == _order(present).tolist()
    sampler.set_epoch(1)
    assert list(sampler) == _order(present, epoch=1).tolist() != first
    assert len(sampler) == 300


def test_shards_are_disjoint_and_equal_length():
    present = _present(300, {1: range(0, 20)})
    shards = [_order(present, fraction=0.0, num_replicas=4, rank=r) for r in range(4)]
    assert {len(s) for s in shards} == {75}
    assert sorted(np.concatenate(shards).tolist()) == list(range(300))  # disjoint, and together every slice
    # Not divisible: equal lengths by padding, as DistributedSampler does; only the padding repeats.
    present = _present(301, {1: range(0, 20)})
    shards = [_order(present, fraction=0.0, num_replicas=4, rank=r) for r in range(4)]
    assert {len(s) for s in shards} == {76}  # ceil(301 / 4)
    together = np.concatenate(shards)
    assert set(together.tolist()) == set(range(301)) and len(together) - len(set(together.tolist())) == 3
    # With oversampling: still equal lengths, the same rule per rank, and different draws on each rank.
    shards = [_order(present, fraction=0.5, num_replicas=4, rank=r) for r in range(4)]
    assert {len(s) for s in shards} == {76}
    for shard in shards:
        assert all((shard[i:i + 16] < 20).sum() >= 8 for i in range(0, 76, 16) if i + 16 <= 76)
    assert len({tuple(s) for s in shards}) == 4
    samplers = [ClassAwareSampler(present, 16, 0.5, num_replicas=4, rank=r) for r in range(4)]
    assert [list(s) for s in samplers] == [s.tolist() for s in shards]


def test_no_structure_in_split_falls_back_to_uniform():
    present = _present(40, {1: range(0)})
    order = _order(present, fraction=0.5)
    assert sorted(order.tolist()) == list(range(40))


def test_a_fixed_window_maps_to_unit_range():
    from ctslice.data.transforms import apply_intensity

    def window(lo, hi):
        return {"clip": [lo, hi], "shift": lo, "scale": hi - lo}

    images = torch.tensor([[-3000, -1024, 0, 1023, 3071, 5000]], dtype=torch.int16)
    out = apply_intensity(images, window(-1024, 3071))
    assert out.dtype == torch.float32
    assert torch.allclose(out, torch.tensor([[0.0, 0.0, 1024 / 4095, 2047 / 4095, 1.0, 1.0]]))
    assert torch.allclose(apply_intensity(images, window(-100, 100))[0, 2], torch.tensor(0.5))
    with pytest.raises(ValueError):
        apply_intensity(images, window(10, 10))

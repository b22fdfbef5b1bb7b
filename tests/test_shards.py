"""The "shards" layout (one zarr shard file per array, slices as inner chunks) and the direct chunk writer:
byte-identical to zarr, read back by zarr and by CacheReader, checked by verify, chosen by a setting."""

import dataclasses

import numpy as np
import pytest
import zarr
from typer.testing import CliRunner

from ctslice.bench.subject_write import measure_subject_write, write_with_zarr
from ctslice.cache import shards, store
from ctslice.cache.manifest import read_manifest
from ctslice.cache.reader import CacheReader
from ctslice.cache.statistics import _recount
from ctslice.cache.verify import verify_cache
from ctslice.cli import app
from ctslice.errors import CacheError
from ctslice.preprocess.repair import repair_cache
from ctslice.preprocess.run import run_preprocess

from conftest import TINY_SETTINGS

SID = "demo0002"
FOLDER = "subjects/s0-0123456789abcdef"


def _arrays(seed=0, s=7, h=24, w=20, labels=5):
    rng = np.random.default_rng(seed)
    image = rng.normal(0, 400, (s, h, w)).astype(np.int16)
    image[2] = -1024  # an all-background slice still gets its chunk
    label = (rng.random((s, h, w)) * labels).astype(np.uint8)
    label[4] = 0
    return {"image": image, "label": label, "foreground": rng.integers(0, 99, s).astype(np.int32),
            "present": rng.random((s, labels)) < 0.5, "hu_histogram": rng.integers(0, 5, 65536).astype(np.int64)}


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _build(tiny_dataset, tmp_path, layout):
    cache = tmp_path / f"cache-{layout}"
    report = run_preprocess(tiny_dataset, cache, dataclasses.replace(TINY_SETTINGS, layout=layout))
    assert report.ok, report.failed
    return cache


@pytest.mark.parametrize("sharded", [False, True])
@pytest.mark.parametrize("threads", [1, 2])
def test_direct_writer_writes_the_bytes_zarr_writes(tmp_path, sharded, threads):
    arrays = _arrays()
    store.write_subject(tmp_path, FOLDER, arrays["image"], arrays["label"], arrays["foreground"], arrays["present"],
                        {}, arrays["hu_histogram"], sharded=sharded, threads=threads)
    write_with_zarr(tmp_path / "reference", arrays, {}, sharded)
    mine, reference = _files(tmp_path / FOLDER), _files(tmp_path / "reference")
    assert mine.keys() == reference.keys() and mine == reference  # chunks, shard files and metadata alike
    assert ("image/c/0/0/0" in mine) and (("image/c/6/0/0" in mine) != sharded)
    group = zarr.open_group(str(tmp_path / FOLDER), mode="r")
    for name, data in arrays.items():
        np.testing.assert_array_equal(group[name][...], data)


def test_shard_index_is_parsed_as_zarr_wrote_it(tmp_path):
    arrays = _arrays(seed=1)
    write_with_zarr(tmp_path / "sharded", arrays, {}, sharded=True)
    write_with_zarr(tmp_path / "sliced", arrays, {}, sharded=False)
    shard = (tmp_path / "sharded" / "image" / "c" / "0" / "0" / "0").read_bytes()
    n = len(arrays["image"])
    offsets, sizes = shards.parse_index(shard[-shards.index_size(n):], n, len(shard))
    for z in range(n):  # each inner chunk is the slice layout's chunk file, byte for byte
        chunk = (tmp_path / "sliced" / "image" / "c" / str(z) / "0" / "0").read_bytes()
        assert shard[offsets[z]:offsets[z] + sizes[z]] == chunk
    damaged = bytearray(shard)
    damaged[-shards.index_size(n) + 3] ^= 1
    with pytest.raises(CacheError, match="shard index checksum mismatch"):
        shards.parse_index(bytes(damaged[-shards.index_size(n):]), n, len(damaged))
    with pytest.raises(CacheError, match="does not account"):  # bytes appended after writing
        shards.parse_index(shard[-shards.index_size(n):], n, len(shard) + 10)


def test_a_sharded_cache_reads_the_same_via_zarr_and_the_reader(tiny_dataset, tiny_cache, tmp_path):
    cache = _build(tiny_dataset, tmp_path, "shards")
    manifest, plain = read_manifest(cache), read_manifest(tiny_cache)
    assert manifest.settings.layout == "shards" and manifest.settings.hash != plain.settings.hash
    reader, reference = CacheReader(cache), CacheReader(tiny_cache)
    assert reader.subjects == reference.subjects and len(reader) == len(reference)
    for row in range(len(reader)):
        for got, want in zip(reader.read_at(row), reference.read_at(row)):
            np.testing.assert_array_equal(got, want)
    row = manifest.subjects.table[SID]
    folder = cache / row.path
    assert sorted(p.name for p in (folder / "image" / "c").rglob("*") if p.is_file()) == ["0"]
    group = zarr.open_group(str(folder), mode="r")  # plain zarr, no ctslice
    assert group["image"].shards == tuple(row.shape) and group["image"].chunks == (1, *row.shape[1:])
    s = reader.subject_number(SID)
    images = np.empty((2, 3, *row.shape[1:]), np.int16)
    labels = np.empty((2, *row.shape[1:]), np.uint8)
    reader.read_batch(np.array([s, s]), np.array([0, row.shape[0] - 1]), 3, images, labels)
    for j, z in enumerate((0, row.shape[0] - 1)):
        np.testing.assert_array_equal(images[j, 1], group["image"][z])
        np.testing.assert_array_equal(labels[j], group["label"][z])
    reader.close()
    reference.close()


def test_verify_and_the_reader_catch_a_flipped_byte_in_a_chunk_or_the_index(tiny_dataset, tmp_path):
    cache = _build(tiny_dataset, tmp_path, "shards")
    assert verify_cache(cache).ok
    row = read_manifest(cache).subjects.table[SID]
    path = cache / shards.shard_path(row.path, "label")
    n = row.shape[0]
    good = path.read_bytes()
    offsets, sizes = shards.parse_index(good[-shards.index_size(n):], n, len(good))
    damaged = bytearray(good)
    damaged[offsets[3] + sizes[3] // 2] ^= 0x10  # inside slice 3's chunk
    path.write_bytes(bytes(damaged))
    [problem] = verify_cache(cache).problems
    assert (problem.subject, problem.slice) == (SID, 3) and problem.message.startswith("label: checksum mismatch")
    with pytest.raises(CacheError, match=rf"subject {SID} slice 3 \(label\): checksum mismatch"):
        CacheReader(cache).read(SID, 3)

    damaged = bytearray(good)
    damaged[-shards.index_size(n) + 5] ^= 0x01  # inside the shard index
    path.write_bytes(bytes(damaged))
    [problem] = verify_cache(cache).problems
    assert (problem.subject, problem.slice) == (SID, None)
    assert problem.message.startswith("label: shard index checksum mismatch")
    with pytest.raises(CacheError, match=rf"subject {SID} slice 0 \(label\): shard index checksum mismatch"):
        CacheReader(cache).read(SID, 0)
    path.unlink()
    assert "label: shard file" in str(verify_cache(cache).problems[0])
    result = repair_cache(cache, tiny_dataset)  # in the cache's own layout
    assert result.damaged == [SID] and result.preprocess.processed == [SID] and verify_cache(cache).ok
    assert read_manifest(cache).settings.layout == "shards"
    assert (cache / shards.shard_path(read_manifest(cache).subjects.table[SID].path, "label")).is_file()


def test_a_layout_change_rewrites_every_subject_and_back(tiny_dataset, tiny_cache):
    before = read_manifest(tiny_cache)
    report = run_preprocess(tiny_dataset, tiny_cache, {"layout": "shards", "workers": 0})
    assert report.ok and "layout" in report.rebuilt_all and len(report.processed) == len(before.subjects)
    after = read_manifest(tiny_cache)
    assert after.settings.layout == "shards" and after.settings.hash != before.settings.hash
    # What a model sees is the same: checkpoints compare this hash, so they resume and evaluate on either layout.
    assert after.data_hash == before.data_hash == before.settings.hash
    assert all(after.subjects.table[sid].path != before.subjects.table[sid].path for sid in before.subjects)
    assert verify_cache(tiny_cache).ok
    assert run_preprocess(tiny_dataset, tiny_cache, {"workers": 0}).processed == []  # the layout sticks
    report = run_preprocess(tiny_dataset, tiny_cache, {"layout": "slices", "workers": 0})
    assert "layout" in report.rebuilt_all
    assert read_manifest(tiny_cache).settings.hash == before.settings.hash  # slices: the hash a cache always had


def test_show_stats_and_the_recount_work_on_a_sharded_cache(tiny_dataset, tmp_path):
    cache = _build(tiny_dataset, tmp_path, "shards")
    for args in (["cache", "show", cache, SID, "--out", tmp_path / "show.png"],
                 ["cache", "stats", cache, "--out", tmp_path / "stats"], ["cache", "info", cache]):
        result = CliRunner().invoke(app, [str(a) for a in args])
        assert result.exit_code == 0, result.output
    row = read_manifest(cache).subjects.table[SID]
    np.testing.assert_array_equal(_recount(cache, row), store.read_histogram(cache, row.path))


def test_a_worker_copy_of_the_reader_opens_its_own_files(tiny_dataset, tmp_path):
    import pickle

    cache = _build(tiny_dataset, tmp_path, "shards")
    reader = CacheReader(cache)
    first = reader.read_at(0)
    copy = pickle.loads(pickle.dumps(reader))
    reader.close()  # the parent's descriptors are gone; the copy's table is its own
    for got, want in zip(copy.read_at(0), first):
        np.testing.assert_array_equal(got, want)
    (cache / shards.shard_path(read_manifest(cache).subjects.table[SID].path, "image")).unlink()
    with pytest.raises(CacheError, match=r"image/c/0/0/0 is missing, the cache is damaged"):
        copy.read(SID, 0)


def test_the_write_benchmark_times_every_way(tmp_path):
    result = measure_subject_write(_arrays(), tmp_path / "w", repeats=1)
    assert set(result["seconds"]) == set(result["vs_zarr"]) and result["vs_zarr"]["zarr, slices (before)"] == 1
    assert all(s > 0 for s in result["seconds"].values()) and not (tmp_path / "w").exists()

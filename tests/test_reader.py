"""CacheReader: exact slices by (subject, z) and by row, clear errors for damaged or foreign caches, pickling."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_SETTINGS

from ctslice.cache import store
from ctslice.cache.manifest import manifest_path, read_manifest
from ctslice.cache.reader import CacheReader
from ctslice.errors import CacheError
from ctslice.preprocess.run import run_preprocess


@pytest.fixture(scope="module")
def cache(_tiny_dataset_master, tmp_path_factory) -> Path:
    """One tiny cache for the tests that only read (those that damage a cache use `tiny_cache`)."""
    path = tmp_path_factory.mktemp("reader") / "cache"
    assert run_preprocess(_tiny_dataset_master, path, TINY_SETTINGS).ok
    return path


def _zarr_arrays(cache: Path, sid: str) -> tuple[np.ndarray, np.ndarray]:
    group = store.open_subject(cache, read_manifest(cache).subjects[sid].path)
    return np.asarray(group["image"][...]), np.asarray(group["label"][...])


def test_reads_every_slice_exactly_as_zarr(cache):
    reader = CacheReader(cache)
    assert len(reader) == sum(r.slices for r in reader.manifest.subjects.values())
    for s, sid in enumerate(reader.subjects):
        image, label = _zarr_arrays(cache, sid)
        for z in range(len(image)):
            got_image, got_label = reader.read(sid, z)
            assert got_image.dtype == np.int16 and got_label.dtype == np.uint8
            np.testing.assert_array_equal(got_image, image[z])
            np.testing.assert_array_equal(got_label, label[z])
            assert got_image.flags.writeable and got_label.flags.writeable
        assert label.any(), "the tiny cache should have labelled slices"


def test_rows_follow_the_slice_index(cache):
    reader = CacheReader(cache)
    index = reader.index
    for row in range(0, len(reader), 7):
        assert reader.locate(row) == (index.subject[row], index.slice[row])
        image, label = reader.read_at(row)
        expected = reader.read(int(index.subject[row]), int(index.slice[row]))
        np.testing.assert_array_equal(image, expected[0])
        np.testing.assert_array_equal(label, expected[1])


def test_context_stack_reads_edge_slices_once_and_repeats_them(cache):
    reader = CacheReader(cache)
    image, _ = _zarr_arrays(cache, reader.subjects[0])
    stack = reader.read_image(0, [0, 0, 1])
    np.testing.assert_array_equal(stack, image[[0, 0, 1]])


def test_out_of_range_and_unknown_subject(cache):
    reader = CacheReader(cache)
    with pytest.raises(IndexError):
        reader.locate(len(reader))
    with pytest.raises(IndexError, match="slice 99 out of range"):
        reader.read(0, 99)
    with pytest.raises(CacheError, match="no subject nobody"):
        reader.read("nobody", 0)


def _chunk(cache: Path, sid: str, array: str, z: int) -> Path:
    return store.chunk_path(cache, read_manifest(cache).subjects[sid].path, array, z)


def test_corrupted_chunk_names_cache_subject_and_slice(tiny_cache):
    reader = CacheReader(tiny_cache)
    sid = reader.subjects[1]
    path = _chunk(tiny_cache, sid, "image", 3)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    raw[20] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(CacheError) as e:
        reader.read(sid, 3)
    message = str(e.value)
    assert str(tiny_cache) in message and f"subject {sid} slice 3 (image)" in message
    assert "checksum mismatch" in message and "\n" not in message
    reader.read(sid, 2)  # the neighbours are fine


def test_missing_and_truncated_chunks(tiny_cache):
    reader = CacheReader(tiny_cache)
    sid = reader.subjects[0]
    _chunk(tiny_cache, sid, "label", 4).unlink()
    with pytest.raises(CacheError, match=f"subject {sid} slice 4 \\(label\\): chunk file .* is missing"):
        reader.read(sid, 4)
    _chunk(tiny_cache, sid, "image", 5).write_bytes(b"\x01\x02")
    with pytest.raises(CacheError, match=f"subject {sid} slice 5 \\(image\\): chunk is truncated"):
        reader.read(sid, 5)


def test_chunk_of_the_wrong_size_is_an_error_not_garbage(tiny_cache):
    reader = CacheReader(tiny_cache)
    sid = reader.subjects[0]
    # A valid, checksummed chunk of the other array: half the bytes an image slice needs.
    _chunk(tiny_cache, sid, "image", 1).write_bytes(_chunk(tiny_cache, sid, "label", 1).read_bytes())
    with pytest.raises(CacheError, match="chunk holds .* bytes, expected"):
        reader.read(sid, 1)


def test_missing_manifest_and_unknown_format_version(tmp_path, tiny_cache):
    with pytest.raises(CacheError, match="no such cache folder"):
        CacheReader(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CacheError, match="no manifest.json, so not a ctslice cache"):
        CacheReader(tmp_path / "empty")
    data = json.loads(manifest_path(tiny_cache).read_text())
    data["format_version"] = 99
    manifest_path(tiny_cache).write_text(json.dumps(data))
    with pytest.raises(CacheError, match="cache format version 99"):
        CacheReader(tiny_cache)


def test_pickles_as_plain_paths_and_reads_the_same(cache):
    reader = CacheReader(cache)
    expected = reader.read_at(5)
    clone = pickle.loads(pickle.dumps(reader))
    assert clone._manifest is None and clone._index is None and "_local" not in clone.__dict__
    got = clone.read_at(5)
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])
    assert clone.index.present.shape == reader.index.present.shape  # reloaded on demand


def test_a_batch_read_reports_each_damage_as_the_slice_read_does(tiny_cache):
    """read_batch builds the error context only on failure: the messages are those of `read`, word for word."""
    reader = CacheReader(tiny_cache)
    sid = reader.subjects[0]
    s = reader.subject_number(sid)
    _chunk(tiny_cache, sid, "label", 4).unlink()
    _chunk(tiny_cache, sid, "image", 5).write_bytes(b"\x01\x02")
    _chunk(tiny_cache, sid, "image", 1).write_bytes(_chunk(tiny_cache, sid, "label", 1).read_bytes())
    raw = bytearray(_chunk(tiny_cache, sid, "image", 3).read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    _chunk(tiny_cache, sid, "image", 3).write_bytes(bytes(raw))
    _, h, w = reader.shapes[s]
    images, labels = np.empty((1, 1, h, w), np.int16), np.empty((1, h, w), np.uint8)
    for z in (4, 5, 1, 3):
        with pytest.raises(CacheError) as single:
            reader.read(sid, z)
        with pytest.raises(CacheError) as batch:
            reader.read_batch(np.array([s]), np.array([z]), 1, images, labels)
        assert str(batch.value) == str(single.value) and str(tiny_cache) in str(batch.value), z
    reader.read_batch(np.array([s, s]), np.array([0, 2]), 1, np.empty((2, 1, h, w), np.int16),
                      np.empty((2, h, w), np.uint8))  # the others are fine


def test_a_batch_is_decoded_into_its_buffer_exactly_as_zarr_stores_it(cache):
    """read_batch fills a caller's batch buffer (2.5D windows clamped at both ends, subjects mixed, lists or
    arrays) with the arrays zarr reads, row for row."""
    reader = CacheReader(cache)
    arrays = [_zarr_arrays(cache, sid) for sid in reader.subjects]
    pairs = [(s, z) for s in range(len(reader.subjects)) for z in (0, 1, int(reader.shapes[s, 0]) - 1)]
    subjects, zs = [s for s, _ in pairs], [z for _, z in pairs]
    _, h, w = reader.shapes[0]
    images, labels = np.full((len(pairs), 5, h, w), -7, np.int16), np.full((len(pairs), h, w), 7, np.uint8)
    reader.read_batch(np.array(subjects), zs, 5, images, labels)
    for j, (s, z) in enumerate(pairs):
        window = np.clip(np.arange(z - 2, z + 3), 0, reader.shapes[s, 0] - 1)
        np.testing.assert_array_equal(images[j], arrays[s][0][window])
        np.testing.assert_array_equal(labels[j], arrays[s][1][z])


def test_a_batch_with_a_slice_out_of_range_reads_nothing(cache):
    reader = CacheReader(cache)
    _, h, w = reader.shapes[0]
    images, labels = np.zeros((2, 1, h, w), np.int16), np.zeros((2, h, w), np.uint8)
    with pytest.raises(IndexError, match="slice 99 out of range"):
        reader.read_batch(np.array([0, 0]), np.array([1, 99]), 1, images, labels)
    assert not images.any() and not labels.any()  # checked before the first chunk is read


def test_a_flipped_byte_in_a_batch_names_the_slice_and_leaves_the_other_rows_right(tiny_cache):
    reader = CacheReader(tiny_cache)
    sid = reader.subjects[0]
    expected = [reader.read(sid, z) for z in (0, 1, 2)]
    raw = bytearray(_chunk(tiny_cache, sid, "image", 2).read_bytes())
    raw[20] ^= 0x01  # inside the compressed payload: only the crc32c can see it
    _chunk(tiny_cache, sid, "image", 2).write_bytes(bytes(raw))
    _, h, w = reader.shapes[0]
    images, labels = np.zeros((3, 1, h, w), np.int16), np.zeros((3, h, w), np.uint8)
    with pytest.raises(CacheError, match=f"subject {sid} slice 2 \\(image\\): checksum mismatch"):
        reader.read_batch(np.zeros(3, np.int64), np.array([0, 1, 2]), 1, images, labels)
    for j in (0, 1):
        np.testing.assert_array_equal(images[j, 0], expected[j][0])
        np.testing.assert_array_equal(labels[j], expected[j][1])

"""Incremental preprocess: exactly the added or modified subjects are processed, and nothing else is rewritten.

"Rewritten" is judged by the subject folders' files (inode, modification time and bytes), never by timing.
"""

import os
import shutil

import nibabel as nib
import pytest
import numpy as np

from conftest import TINY_SETTINGS
from ctslice.bench.incremental import bench_incremental, modify_subject
from ctslice.cache import store
from ctslice.cache.manifest import FORMAT_VERSION, read_manifest, write_manifest
from ctslice.config import PreprocessConfig
from ctslice.errors import CtsliceError
from ctslice.preprocess.run import run_preprocess

IDS = ["demo0000", "demo0001", "demo0002", "demo0003", "demo0004"]


def snapshot(cache, sid=None):
    """Subject id -> {file: (inode, mtime_ns, bytes)} for every cached subject (or one)."""
    manifest = read_manifest(cache)
    out = {}
    for s, record in manifest.subjects.items():
        if sid is not None and s != sid:
            continue
        folder = cache / record.path
        out[s] = {p.relative_to(folder).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes())
                  for p in sorted(folder.rglob("*")) if p.is_file()}
    return out


def others(snap, *excluded):
    return {sid: files for sid, files in snap.items() if sid not in excluded}


def test_unchanged_dataset_processes_and_rewrites_nothing(tiny_dataset, tiny_cache):
    before = snapshot(tiny_cache)
    report = run_preprocess(tiny_dataset, tiny_cache, TINY_SETTINGS)
    assert report.processed == [] and report.reused == [] and report.unchanged == IDS
    assert report.rebuilt_all is None
    assert snapshot(tiny_cache) == before


def test_added_subject_is_the_only_one_processed(tiny_dataset, tiny_cache):
    before = snapshot(tiny_cache)
    splits_before = read_manifest(tiny_cache).split_of()
    shutil.copytree(tiny_dataset / "demo0001", tiny_dataset / "extra01")
    report = run_preprocess(tiny_dataset, tiny_cache, TINY_SETTINGS)
    assert report.processed == ["extra01"] and report.unchanged == IDS
    assert others(snapshot(tiny_cache), "extra01") == before
    split = read_manifest(tiny_cache).split_of()
    assert {sid: split[sid] for sid in IDS} == splits_before and split["extra01"] in ("train", "val", "test")


def test_removed_subject_leaves_folder_manifest_splits_and_index(tiny_dataset, tiny_cache):
    before = snapshot(tiny_cache)
    folder = tiny_cache / read_manifest(tiny_cache).subjects["demo0002"].path
    shutil.rmtree(tiny_dataset / "demo0002")
    report = run_preprocess(tiny_dataset, tiny_cache, TINY_SETTINGS)
    assert report.removed == ["demo0002"] and report.processed == []
    manifest = read_manifest(tiny_cache)
    assert "demo0002" not in manifest.subjects and "demo0002" not in manifest.split_of()
    assert "demo0002" not in store.read_slice_index(tiny_cache, manifest.slice_index).subjects
    assert folder.exists()  # kept one more run, for readers of the previous manifest
    assert snapshot(tiny_cache) == others(before, "demo0002")
    run_preprocess(tiny_dataset, tiny_cache, TINY_SETTINGS)
    assert not folder.exists()


def test_modified_subject_gets_a_new_folder_and_the_old_one_goes(tiny_dataset, tiny_cache):
    before = snapshot(tiny_cache)
    old = read_manifest(tiny_cache).subjects["demo0001"]
    old_image = np.asarray(store.open_subject(tiny_cache, old.path)["image"][...])
    modify_subject(tiny_dataset, "demo0001", delta=5)
    report = run_preprocess(tiny_dataset, tiny_cache, TINY_SETTINGS)
    assert report.processed == ["demo0001"] and report.unchanged == [s for s in IDS if s != "demo0001"]
    new = read_manifest(tiny_cache).subjects["demo0001"]
    assert new.key != old.key and (tiny_cache / old.path).exists()  # until the next run
    image = np.asarray(store.open_subject(tiny_cache, new.path)["image"][...])
    assert not np.array_equal(image, old_image)
    assert others(snapshot(tiny_cache), "demo0001") == others(before, "demo0001")
    run_preprocess(tiny_dataset, tiny_cache, TINY_SETTINGS)
    assert not (tiny_cache / old.path).exists()


def test_touched_files_are_rehashed_not_reprocessed_and_their_times_recorded(tiny_dataset, tiny_cache):
    before = snapshot(tiny_cache)
    files = [tiny_dataset / "demo0003" / "ct.nii.gz", next((tiny_dataset / "demo0003" / "segmentations").iterdir())]
    for path in files:
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    report = run_preprocess(tiny_dataset, tiny_cache, TINY_SETTINGS)
    assert report.processed == [] and report.unchanged == IDS
    assert snapshot(tiny_cache) == before
    recorded = read_manifest(tiny_cache).subjects["demo0003"].files
    for path in files:  # the new times are recorded, so the next run takes the fast path again
        assert recorded[path.relative_to(tiny_dataset).as_posix()]["mtime_ns"] == path.stat().st_mtime_ns


def test_content_setting_change_rebuilds_every_subject(tiny_dataset, tiny_cache):
    before = snapshot(tiny_cache)
    report = run_preprocess(tiny_dataset, tiny_cache, PreprocessConfig(spacing=None, size=48, workers=0))
    assert report.rebuilt_all == "settings changed: size 40 -> 48" and report.processed == IDS
    assert report.changed_settings == {"size": [40, 48]}
    assert report.notes == ["full rebuild of 5 subject(s): settings changed: size 40 -> 48"]
    manifest = read_manifest(tiny_cache)
    assert all(r.shape[1:] == [48, 48] for r in manifest.subjects.values())
    assert set(snapshot(tiny_cache)) == set(before)
    run_preprocess(tiny_dataset, tiny_cache, PreprocessConfig(spacing=None, size=48, workers=0))
    assert sorted(p.name for p in (tiny_cache / "subjects").iterdir() if p.name != "zarr.json") == sorted(
        r.path.split("/")[-1] for r in manifest.subjects.values())  # old folders removed by the run after


def test_new_structure_changes_the_label_map_and_rebuilds_every_subject(tiny_dataset, tiny_cache):
    seg = tiny_dataset / "demo0000" / "segmentations"
    shutil.copy(next(seg.iterdir()), seg / "brand_new_structure.nii.gz")
    report = run_preprocess(tiny_dataset, tiny_cache, TINY_SETTINGS)
    assert report.rebuilt_all.startswith("settings changed: label map") and report.processed == IDS
    assert "+brand_new_structure" in report.rebuilt_all
    assert "brand_new_structure" in read_manifest(tiny_cache).label_map.values()


def test_force_computes_every_subject_again_into_new_folders(tiny_dataset, tiny_cache):
    before = read_manifest(tiny_cache)
    report = run_preprocess(tiny_dataset, tiny_cache, TINY_SETTINGS, force=True)
    assert report.rebuilt_all == "--force" and report.processed == IDS and report.reused == []
    after = read_manifest(tiny_cache)
    for sid in IDS:  # new folders (same content, so same shapes and statistics)
        assert after.subjects[sid].path != before.subjects[sid].path
        assert after.subjects[sid].label_voxels == before.subjects[sid].label_voxels
    assert after.splits == before.splits
    run_preprocess(tiny_dataset, tiny_cache, TINY_SETTINGS)  # the old ones go with the run after
    assert not any((tiny_cache / before.subjects[sid].path).exists() for sid in IDS)


def test_existing_split_assignments_are_kept_even_through_a_rebuild(tiny_dataset, tmp_path):
    (tiny_dataset / "meta.csv").unlink()  # no official split: the rule and the cache's own split decide
    cache = tmp_path / "cache"
    run_preprocess(tiny_dataset, cache, TINY_SETTINGS)
    manifest = read_manifest(cache)
    moved = manifest.splits["train"][0]  # pretend it was assigned to test by an earlier rule or by hand
    manifest.splits["train"].remove(moved)
    manifest.splits["test"].append(moved)
    write_manifest(cache, manifest)
    shutil.copytree(tiny_dataset / "demo0001", tiny_dataset / "extra01")
    run_preprocess(tiny_dataset, cache, TINY_SETTINGS)
    assert read_manifest(cache).split_of()[moved] == "test"
    run_preprocess(tiny_dataset, cache, PreprocessConfig(spacing=None, size=48, workers=0))
    assert read_manifest(cache).split_of()[moved] == "test"


def test_subject_folder_deleted_by_hand_is_made_again(tiny_dataset, tiny_cache):
    shutil.rmtree(tiny_cache / read_manifest(tiny_cache).subjects["demo0004"].path)
    report = run_preprocess(tiny_dataset, tiny_cache, TINY_SETTINGS)
    assert report.processed == ["demo0004"] and "demo0004" not in report.unchanged
    assert store.subject_exists(tiny_cache, read_manifest(tiny_cache).subjects["demo0004"].path)


def test_modify_subject_changes_the_ct_bytes_but_not_its_shape(tiny_dataset):
    path = tiny_dataset / "demo0002" / "ct.nii.gz"
    before, data = path.read_bytes(), np.asanyarray(nib.load(path).dataobj)
    modify_subject(tiny_dataset, "demo0002", delta=3)
    assert path.read_bytes() != before
    assert np.array_equal(np.asanyarray(nib.load(path).dataobj), data + 3)


def test_incremental_benchmark_processes_exactly_one_subject(tmp_path, monkeypatch):
    result = bench_incremental(subjects=3, size=16, slices=(4, 5), workdir=tmp_path)
    assert result.full_s > 0 and result.incremental_s > 0 and result.subjects == 3
    assert list(tmp_path.iterdir()) == []  # its temporary dataset and cache are gone
    # the benchmark checks what each run processed: with no subject modified, its last run processes none
    monkeypatch.setattr("ctslice.bench.incremental.modify_subject", lambda data, subject: None)
    with pytest.raises(CtsliceError, match=r"processed \[\] \(expected 1\)"):
        bench_incremental(subjects=3, size=16, slices=(4, 5), workdir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_cache_of_another_format_version_is_rebuilt(tiny_dataset, tiny_cache):
    import json

    path = tiny_cache / "manifest.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "format_version": 0}))
    report = run_preprocess(tiny_dataset, tiny_cache, TINY_SETTINGS)
    # A real format change also changes every key (the format is hashed into it), so all would be processed;
    # here only the number was edited, so the same-key folders are reused, but every subject is gone through.
    assert report.rebuilt_all.startswith("cache of another format")
    assert sorted(report.processed + report.reused) == IDS and report.unchanged == []
    assert read_manifest(tiny_cache).format_version == FORMAT_VERSION

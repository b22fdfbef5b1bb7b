"""End-to-end preprocessing: manifest contents, bad input, dask parallelism, both layouts."""

import gzip
import json
import shutil

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from builders import SHAPE, box_mask, nnunet_dataset, save, ts_subject
from conftest import REAL_SUBJECT, TINY_SETTINGS, require_real_subject
from geometry_reference import labels_to_original
from ctslice import __version__
from ctslice.cache import store
from ctslice.cache.manifest import FORMAT_VERSION, read_manifest
from ctslice.cli import app
from ctslice.config import PreprocessConfig
from ctslice.errors import CtsliceError
from ctslice.imaging.geometry import Geometry
from ctslice.preprocess.run import run_preprocess

NATIVE = PreprocessConfig(spacing=None, size=16, workers=0)


def cached_arrays(cache, sid):
    manifest = read_manifest(cache)
    group = store.open_subject(cache, manifest.subjects[sid].path)
    return np.asarray(group["image"][...]), np.asarray(group["label"][...])


def test_manifest_describes_the_cache(tiny_dataset, tiny_cache):
    m = read_manifest(tiny_cache)
    assert m.format_version == FORMAT_VERSION and m.ctslice_version == __version__
    assert m.settings.size == 40 and m.settings.spacing is None and len(m.settings.hash) == 16
    assert m.settings.split() == {"val_fraction": 0.2, "seed": 0}
    assert m.label_map["0"] == "background" and m.num_labels == len(m.label_map) > 5
    assert m.dataset == {"root": str(tiny_dataset.resolve()), "layout": "totalsegmentator", "warnings": []}
    ids = sorted(m.subjects)
    assert sorted(sum(m.splits.values(), [])) == ids  # every subject in exactly one split
    assert m.failed == {}
    assert m.totals["subjects"] == 5 and m.totals["slices"] == sum(r.slices for r in m.subjects.values())
    record = m.subjects[ids[0]]
    assert set(record.files) >= {f"{ids[0]}/ct.nii.gz"}
    f = record.files[f"{ids[0]}/ct.nii.gz"]
    assert f["size"] > 0 and f["mtime_ns"] > 0 and len(f["sha256"]) == 64
    assert record.shape[1:] == [40, 40] and record.slices == record.shape[0]
    assert record.geometry["original_axcodes"] in {"RAS", "LPS"}
    image, label = cached_arrays(tiny_cache, ids[0])
    assert image.dtype == np.int16 and label.dtype == np.uint8 and image.shape == tuple(record.shape)
    assert sum(record.label_voxels) == label.size
    index = store.read_slice_index(tiny_cache, m.slice_index)
    assert len(index) == m.totals["slices"] and index.present.shape[1] == m.num_labels


def test_demo_meta_csv_split_is_used(tiny_dataset, tiny_cache):
    import csv
    with open(tiny_dataset / "meta.csv", encoding="utf-8-sig") as f:
        official = {r["image_id"]: r["split"] for r in csv.DictReader(f, delimiter=";")}
    assert read_manifest(tiny_cache).split_of() == official


def test_missing_mask_counts_as_empty_with_a_warning(tmp_path):
    ts_subject(tmp_path / "d", "a")
    ts_subject(tmp_path / "d", "b", masks={"liver": box_mask()})
    run_preprocess(tmp_path / "d", tmp_path / "c", NATIVE)
    record = read_manifest(tmp_path / "c").subjects["b"]
    assert any("spleen" in w and "missing" in w for w in record.warnings)
    assert record.label_voxels[1] == 0  # spleen index 1, empty


def test_real_subject_end_to_end_maps_back_to_the_reference(tmp_path):
    root = require_real_subject()
    run_preprocess(root, tmp_path / "c", PreprocessConfig(spacing=None, size=128, workers=0))
    m = read_manifest(tmp_path / "c")
    record = m.subjects["s0001"]
    _, label = cached_arrays(tmp_path / "c", "s0001")
    back = labels_to_original(label, Geometry.from_json(record.geometry))
    expected = np.asanyarray(nib.load(REAL_SUBJECT / "s0001_expected_multilabel.nii.gz").dataobj)
    assert np.array_equal(back, expected)
    assert record.cropped_label_voxels == 0 and record.spacing == [3.0, 3.0, 3.0]
    assert m.num_labels == 118


def test_nnunet_dataset_maps_values_to_indices(tmp_path):
    label = box_mask() * 3
    label[0, 0, 0] = 1
    nnunet_dataset(tmp_path / "d", {"case_1": label}, {"background": 0, "liver": 3, "tumour": 1})
    run_preprocess(tmp_path / "d", tmp_path / "c", NATIVE)
    m = read_manifest(tmp_path / "c")
    assert m.label_map == {"0": "background", "1": "tumour", "2": "liver"}
    _, cached = cached_arrays(tmp_path / "c", "case_1")
    assert set(np.unique(cached)) == {0, 1, 2}
    assert int((cached == 2).sum()) == int((label == 3).sum())


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


BAD_INPUTS = {
    "truncated": (lambda d: _truncate(d / "bad/ct.nii.gz"), "bad/ct.nii.gz", "truncated"),
    "not nifti": (lambda d: (d / "bad/ct.nii.gz").write_bytes(gzip.compress(b"hello")), "bad/ct.nii.gz",
                  "readable"),
    "mask shape": (lambda d: save(d / "bad/segmentations/liver.nii.gz", np.zeros((10, 12, 4), np.uint8)),
                   "bad/segmentations/liver.nii.gz", "shape"),
    "mask grid": (lambda d: save(d / "bad/segmentations/liver.nii.gz", box_mask(), np.diag([2.0, 2, 3.5, 1])),
                  "bad/segmentations/liver.nii.gz", "affine differs"),
    "4D": (lambda d: save(d / "bad/ct.nii.gz", np.zeros((*SHAPE, 2), np.int16)), "bad/ct.nii.gz", "3D"),
    "2D": (lambda d: save(d / "bad/ct.nii.gz", np.zeros(SHAPE[:2], np.int16)), "bad/ct.nii.gz", "3D"),
    "non-binary": (lambda d: save(d / "bad/segmentations/liver.nii.gz", box_mask() * 2),
                   "bad/segmentations/liver.nii.gz", "0/1"),
    "no CT": (lambda d: (d / "bad/ct.nii.gz").unlink(), "bad/ct.nii.gz", "no CT"),
    "no mask": (lambda d: shutil.rmtree(d / "bad/segmentations"), "bad/segmentations/", "no mask file"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_names_subject_and_file_and_the_rest_is_processed(tmp_path, case):
    damage, file, reason = BAD_INPUTS[case]
    data = tmp_path / "d"
    ts_subject(data, "good")
    ts_subject(data, "bad", seed=1)
    damage(data)
    report = run_preprocess(data, tmp_path / "c", NATIVE)
    assert not report.ok and list(report.failed) == ["bad"]
    assert file in report.failed["bad"] and reason in report.failed["bad"]
    m = read_manifest(tmp_path / "c")
    assert list(m.subjects) == ["good"] and m.failed == report.failed


@pytest.mark.parametrize("threads", [1, 2])
def test_a_broken_ct_is_reported_before_a_broken_mask_while_masks_are_read_alongside(tmp_path, monkeypatch, threads):
    """With 2 threads the CT is decompressed alongside the masks; its error still wins, as when it was read first."""
    monkeypatch.setattr("ctslice.preprocess.execute.subject_threads", lambda *a: threads)
    data = tmp_path / "d"
    ts_subject(data, "good")
    ts_subject(data, "bad", seed=1)
    _truncate(data / "bad/ct.nii.gz")
    save(data / "bad/segmentations/liver.nii.gz", box_mask() * 2)
    report = run_preprocess(data, tmp_path / "c", NATIVE)
    assert list(report.failed) == ["bad"] and "bad/ct.nii.gz" in report.failed["bad"]
    assert "truncated" in report.failed["bad"]


def test_unsafe_and_duplicate_ids_are_reported(tmp_path):
    data = tmp_path / "d"
    for sid in ("ok", "A1", "a1", "has space"):
        ts_subject(data, sid)
    report = run_preprocess(data, tmp_path / "c", NATIVE)
    assert sorted(report.failed) == ["A1", "a1", "has space"]
    assert list(read_manifest(tmp_path / "c").subjects) == ["ok"]


def test_failed_run_keeps_the_existing_cache(tmp_path):
    data, cache = tmp_path / "d", tmp_path / "c"
    ts_subject(data, "a")
    ts_subject(data, "b", seed=1)
    run_preprocess(data, cache, NATIVE)
    before_image, before_label = cached_arrays(cache, "b")
    _truncate(data / "b" / "ct.nii.gz")  # b's new input is broken
    report = run_preprocess(data, cache, NATIVE)
    assert list(report.failed) == ["b"]
    m = read_manifest(cache)
    assert sorted(m.subjects) == ["a", "b"]  # the previous, valid version of b survives
    image, label = cached_arrays(cache, "b")
    assert np.array_equal(image, before_image) and np.array_equal(label, before_label)


def test_empty_dataset_folder_fails_before_touching_the_cache(tmp_path, tiny_cache):
    (tmp_path / "empty").mkdir()
    before = (tiny_cache / "manifest.json").read_bytes()
    with pytest.raises(CtsliceError, match="no subjects found"):
        run_preprocess(tmp_path / "empty", tiny_cache, TINY_SETTINGS)
    assert (tiny_cache / "manifest.json").read_bytes() == before


def test_cli_exits_nonzero_and_names_the_failure(tmp_path):
    data = tmp_path / "d"
    ts_subject(data, "good")
    ts_subject(data, "bad", seed=1)
    _truncate(data / "bad" / "ct.nii.gz")
    result = CliRunner().invoke(app, ["preprocess", str(data), "--cache", str(tmp_path / "c"), "--workers", "0",
                                      "--spacing", "native", "--size", "16"])
    assert result.exit_code == 1
    assert "bad: bad/ct.nii.gz" in result.output and "1 failed" in result.output
    assert "Traceback" not in result.output
    missing = CliRunner().invoke(app, ["preprocess", str(tmp_path / "nowhere"), "--cache", str(tmp_path / "c2")])
    assert missing.exit_code == 2 and "does not exist" in missing.output


def _content(cache):
    m = read_manifest(cache)
    out = {}
    for sid, record in m.subjects.items():
        image, label = cached_arrays(cache, sid)
        out[sid] = (record.key, record.path, image.tobytes(), label.tobytes())
    index = store.read_slice_index(cache, m.slice_index)
    return out, m.splits, m.label_map, index.present.tobytes(), index.foreground.tobytes()


def test_two_dask_workers_give_the_same_cache_as_one(tiny_dataset, tmp_path):
    one = run_preprocess(tiny_dataset, tmp_path / "one", PreprocessConfig(spacing=2.5, size=40, workers=1))
    two = run_preprocess(tiny_dataset, tmp_path / "two", PreprocessConfig(spacing=2.5, size=40, workers=2))
    assert one.ok and two.ok and len(two.processed) == 5
    assert _content(tmp_path / "one") == _content(tmp_path / "two")


def test_manifest_is_plain_json_and_settings_hash_tracks_content(tiny_dataset, tmp_path):
    run_preprocess(tiny_dataset, tmp_path / "a", TINY_SETTINGS)
    run_preprocess(tiny_dataset, tmp_path / "b", PreprocessConfig(spacing=None, size=48, workers=0))
    a = json.loads((tmp_path / "a" / "manifest.json").read_text())
    b = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert a["settings"]["hash"] != b["settings"]["hash"]


def test_cache_holds_only_arrays_and_json(tiny_cache):
    """No pickles, in any guise: every file is JSON or CSV we wrote, the lock, or a chunk of an array whose
    metadata names only numeric dtypes and the codecs chosen in store.py (a pickle codec or an object array
    would show up here)."""
    codecs, dtypes, chunks = set(), set(), 0
    for path in (p for p in tiny_cache.rglob("*") if p.is_file()):
        rel = path.relative_to(tiny_cache).as_posix()
        if path.name == "zarr.json":
            meta = json.loads(path.read_text())
            if meta["node_type"] == "array":
                dtypes.add(meta["data_type"])
                codecs |= {c["name"] for c in meta["codecs"]}
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif "/c/" in rel:
            chunks += 1
        else:
            assert rel in {"splits.csv", ".lock", ".ctslice-cache"}, rel
    assert chunks > 0 and dtypes <= {"int16", "uint8", "int32", "int64", "float64", "bool"}
    assert codecs <= {"bytes", "blosc", "crc32c"}, codecs


def test_runs_on_an_existing_dask_cluster_by_address_and_scheduler_file(tiny_dataset, tmp_path):
    """--dask-scheduler: the same job on a cluster that ctslice did not start (here: threads on loopback)."""
    import logging

    from dask.distributed import LocalCluster

    # The scheduler writes its own file at start, as `dask scheduler --scheduler-file` does. (Client.
    # write_scheduler_file after a run failed now and then: it dumps the workers' last heartbeat metrics, whose
    # per-task digests have tuple keys that json cannot write whenever a heartbeat fell after the first run.)
    scheduler_file = tmp_path / "scheduler.json"
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0",
                      silence_logs=logging.ERROR, scheduler_kwargs={"scheduler_file": str(scheduler_file)}
                      ) as cluster:
        by_address = run_preprocess(tiny_dataset, tmp_path / "a",
                                    PreprocessConfig(spacing=None, size=40, dask_scheduler=cluster.scheduler_address))
        by_file = run_preprocess(tiny_dataset, tmp_path / "b",
                                 PreprocessConfig(spacing=None, size=40, dask_scheduler=str(scheduler_file)))
    assert by_address.ok and by_file.ok and len(by_address.processed) == len(by_file.processed) == 5
    assert _content(tmp_path / "a")[0] == _content(tmp_path / "b")[0]


def test_unreachable_scheduler_is_a_clear_error(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.setattr("ctslice.preprocess.parallel.CONNECT_TIMEOUT", "1s")
    cfg = PreprocessConfig(spacing=None, size=40, dask_scheduler="tcp://127.0.0.1:9")
    with pytest.raises(CtsliceError, match="cannot reach the dask scheduler"):
        run_preprocess(tiny_dataset, tmp_path / "c", cfg)


def test_a_singleton_4d_ct_is_preprocessed_as_its_3d_volume(tmp_path):
    data = tmp_path / "d"
    ts_subject(data, "flat")
    ts_subject(data, "four", seed=1)
    ct = nib.load(data / "flat" / "ct.nii.gz")
    save(data / "four" / "ct.nii.gz", np.asanyarray(ct.dataobj)[..., None])  # X, Y, Z, 1
    report = run_preprocess(data, tmp_path / "c", NATIVE)
    assert report.ok, report.failed
    m = read_manifest(tmp_path / "c")
    assert m.subjects["four"].shape == m.subjects["flat"].shape


def test_a_ct_whose_voxel_size_is_absurd_fails_alone_naming_its_file(tmp_path):
    data = tmp_path / "d"
    ts_subject(data, "good")
    huge = np.diag([2e6, 2e6, 3e6, 1])
    ts_subject(data, "huge", affine=huge, seed=1)
    report = run_preprocess(data, tmp_path / "c", PreprocessConfig(spacing=1.5, size=16, workers=0))
    assert list(report.failed) == ["huge"] and "huge/ct.nii.gz" in report.failed["huge"]
    assert "voxel size" in report.failed["huge"] and list(read_manifest(tmp_path / "c").subjects) == ["good"]

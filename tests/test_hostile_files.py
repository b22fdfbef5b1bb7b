"""No hangs, no huge allocations, no tracebacks (issue 7, items 7-10): special files are never read, headers are
checked before decoding, and known failures are one `error:` line (or a per-subject failure) naming the path."""

import errno
import gzip
import json
import os
import signal

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from builders import nnunet_dataset, save, ts_subject
from conftest import TINY_SETTINGS
from ctslice.cache import store
from ctslice.cache.manifest import read_manifest
from ctslice.cache.reader import CacheReader
from ctslice.cache.verify import verify_cache
from ctslice.cli import app
from ctslice.errors import CacheError, CtsliceError
from ctslice.imaging import memory
from ctslice.preprocess.parallel import local_cluster_options
from ctslice.preprocess.run import run_preprocess
from ctslice.preprocess.sources import discover

CLI_SETTINGS = ["--workers", "0", "--spacing", "native", "--size", "40"]


def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture
def no_hang():
    """A safety net, not a time measurement: a test that would hang on a FIFO fails instead of blocking the run."""
    def hung(*_):
        raise AssertionError("hung on a special file")
    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(120)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def test_a_mask_linked_to_dev_zero_fails_its_subject_only(tmp_path, no_hang):
    data = tmp_path / "data"
    ts_subject(data, "s01")
    ts_subject(data, "s02")
    mask = data / "s02" / "segmentations" / "liver.nii.gz"
    mask.unlink()
    mask.symlink_to("/dev/zero")
    report = run_preprocess(data, tmp_path / "cache", TINY_SETTINGS)
    assert list(report.failed) == ["s02"] and "not a regular file" in report.failed["s02"]
    assert "s02/segmentations/liver.nii.gz" in report.failed["s02"] and report.processed == ["s01"]


def test_a_fifo_or_a_device_link_in_place_of_a_chunk_is_reported_not_read(tiny_cache, no_hang):
    record = read_manifest(tiny_cache).subjects["demo0001"]
    fifo = store.chunk_path(tiny_cache, record.path, "image", 1)
    fifo.unlink()
    os.mkfifo(fifo)
    link = store.chunk_path(tiny_cache, record.path, "label", 2)
    link.unlink()
    link.symlink_to("/dev/zero")
    report = verify_cache(tiny_cache)
    assert [(p.subject, p.slice) for p in report.problems] == [("demo0001", 1), ("demo0001", 2)]
    assert "not a regular file" in report.problems[0].message and "link" in report.problems[1].message
    reader = CacheReader(tiny_cache)
    for z, read in ((1, reader.read_image), (2, reader.read_label)):
        with pytest.raises(CacheError, match=f"demo0001 slice {z}"):
            read("demo0001", [z] if read == reader.read_image else z)


def test_a_missing_chunk_of_the_slice_index_is_damage_not_zeros(tiny_cache):
    index = read_manifest(tiny_cache).slice_index
    (tiny_cache / index / "present" / "c" / "0" / "0").unlink()
    with pytest.raises(CacheError, match="chunk of present is missing"):
        CacheReader(tiny_cache)
    assert any("present is missing" in str(p) for p in verify_cache(tiny_cache).problems)


def write_header_only(path, shape, dtype=np.int16):
    """A .nii.gz whose header declares `shape` but which holds no voxel data (tens of bytes)."""
    header = nib.Nifti1Header()
    header.set_data_dtype(dtype)
    header.set_data_shape(shape)
    header.set_qform(np.eye(4), code=1)
    header.set_sform(np.eye(4), code=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(header.binaryblock + b"\0" * 4))


def test_a_tiny_file_declaring_gigabytes_fails_at_once_naming_the_file(tmp_path):
    data = tmp_path / "data"
    ts_subject(data, "s01")
    ts_subject(data, "huge")
    write_header_only(data / "huge" / "ct.nii.gz", (2048, 2048, 2000))
    report = run_preprocess(data, tmp_path / "cache", TINY_SETTINGS)
    assert list(report.failed) == ["huge"] and "huge/ct.nii.gz" in report.failed["huge"]
    assert "more than this" in report.failed["huge"] and "GB" in report.failed["huge"]


def test_a_subject_that_cannot_fit_in_memory_fails_before_decoding(tmp_path, monkeypatch):
    data = tmp_path / "data"
    ts_subject(data, "s01")
    monkeypatch.setattr(memory, "available_bytes", lambda: 1000)  # less than its 10x12x5 voxels need
    report = run_preprocess(data, tmp_path / "cache", TINY_SETTINGS)
    assert "s01/ct.nii.gz" in report.failed["s01"] and "available to this worker" in report.failed["s01"]


def test_an_rgb_nifti_as_ct_fails_naming_the_file(tmp_path):
    data = tmp_path / "data"
    ts_subject(data, "s01")
    rgb = np.zeros((10, 12, 5), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    save(data / "s01" / "ct.nii.gz", rgb)
    report = run_preprocess(data, tmp_path / "cache", TINY_SETTINGS)
    assert "s01/ct.nii.gz" in report.failed["s01"] and "scalar" in report.failed["s01"]


@pytest.mark.parametrize("labels", [["background", "liver"], None, {"background": "0", "liver": "1"}])
def test_bad_dataset_json_labels_are_one_error_line(tmp_path, labels):
    label = np.zeros((10, 12, 5), np.uint8)
    data = nnunet_dataset(tmp_path / "data", {"case01": label}, {"background": 0})
    (data / "dataset.json").write_text(json.dumps({"labels": labels}))
    result = cli("preprocess", data, "--cache", tmp_path / "cache", *CLI_SETTINGS)
    assert result.exit_code == 2 and "dataset.json" in result.output and "Traceback" not in result.output


def test_a_toml_value_of_the_wrong_type_is_one_error_line(tiny_dataset, tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text('[preprocess]\nsize = "128"\n')
    result = cli("preprocess", tiny_dataset, "--cache", tmp_path / "cache", "--config", config)
    assert result.exit_code == 2 and "size must be an integer from 16 to 4096, got '128' (a string)" in result.output
    assert str(config) in result.output and "Traceback" not in result.output


def test_a_read_only_cache_is_one_error_line(tiny_dataset, tiny_cache, monkeypatch):
    real_open = os.open

    def refuse_lock(path, *args, **kwargs):
        if str(path).endswith(".lock"):
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuse_lock)
    result = cli("preprocess", tiny_dataset, "--cache", tiny_cache, *CLI_SETTINGS)
    assert result.exit_code == 2 and "Permission denied" in result.output and ".lock" in result.output
    assert "Traceback" not in result.output


def test_a_full_disk_while_writing_the_index_leaves_the_previous_cache(tiny_dataset, tiny_cache, monkeypatch):
    import shutil

    manifest = (tiny_cache / "manifest.json").read_bytes()
    shutil.rmtree(tiny_dataset / "demo0001")  # so the run writes a new slice index

    def full(*_):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store, "write_slice_index", full)
    result = cli("preprocess", tiny_dataset, "--cache", tiny_cache, *CLI_SETTINGS)
    assert result.exit_code == 2 and "No space left on device" in result.output
    assert "previous cache is intact" in result.output and "Traceback" not in result.output
    assert (tiny_cache / "manifest.json").read_bytes() == manifest and verify_cache(tiny_cache).ok


def test_subject_ids_with_a_trailing_newline_are_refused_and_hidden_folders_are_reported(tmp_path):
    data = tmp_path / "data"
    ts_subject(data, "s01")
    ts_subject(data, "s02\n")
    ts_subject(data, ".backup")
    dataset = discover(data)
    assert [s.id for s in dataset.subjects] == ["s01"]
    assert [p.subject for p in dataset.problems] == ["s02\n"]
    assert any(".backup" in w and "hidden" in w for w in dataset.warnings)


def test_the_local_dask_cluster_listens_on_loopback_without_a_dashboard():
    options = local_cluster_options(2)
    assert options["host"] == "127.0.0.1" and options["dashboard_address"] is None


def test_clean_leftovers_says_what_it_could_not_remove(tiny_cache, monkeypatch):
    from ctslice.cache import layout

    (tiny_cache / ".staging" / "half-written").mkdir(parents=True)
    monkeypatch.setattr(layout.shutil, "rmtree", lambda *a, **k: None)  # e.g. a busy or protected folder
    result = cli("cache", "clean", tiny_cache, "--leftovers")
    assert result.exit_code == 1 and "0 leftover(s) removed, 1 could not be removed" in result.output
    assert "not removed" in result.output and (tiny_cache / ".staging").exists()


def test_config_type_errors_name_the_setting():
    from ctslice.config import load_config

    with pytest.raises(CtsliceError, match="workers must be an integer from 0 to 4096, got 'many'"):
        load_config(None, {"preprocess": {"workers": "many"}})

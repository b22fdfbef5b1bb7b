"""cache info (what is in it), cache status (what changed in the dataset), and clear errors for bad caches."""

import json
import os
import shutil

from typer.testing import CliRunner

from ctslice.bench.incremental import modify_subject
from ctslice.cache.info import cache_info
from ctslice.cache.manifest import FORMAT_VERSION, read_manifest
from ctslice.preprocess.status import cache_status
from ctslice.cli import app

IDS = ["demo0000", "demo0001", "demo0002", "demo0003", "demo0004"]


def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_info_counts_subjects_slices_splits_and_sizes_text_and_json(tiny_cache):
    manifest = read_manifest(tiny_cache)
    info = cache_info(tiny_cache)
    slices = sum(r.slices for r in manifest.subjects.values())
    assert (info.subjects, info.slices, info.failed) == (5, slices, 0)
    assert {n: s["subjects"] for n, s in info.splits.items()} == {n: len(i) for n, i in manifest.splits.items()}
    assert sum(s["slices"] for s in info.splits.values()) == slices
    assert info.structures == manifest.num_labels - 1 and info.slice_size == [[40, 40]]
    assert info.spacing_mm["slice"][0] <= info.spacing_mm["slice"][1]
    assert info.raw_bytes == slices * 40 * 40 * 3
    assert 0 < info.size.bytes <= info.size.disk_bytes
    assert info.compression_ratio == round(info.raw_bytes / info.size.bytes, 3)
    assert info.format_version == FORMAT_VERSION and info.created <= info.updated
    assert info.leftovers.files == 0
    text = cli("cache", "info", tiny_cache)
    assert text.exit_code == 0 and "subjects   5" in text.output and "compression" in text.output
    data = json.loads(cli("cache", "info", tiny_cache, "--json").output)
    assert data["subjects"] == 5 and data["settings"]["size"] == 40 and data["size"]["bytes"] == info.size.bytes


def test_info_counts_leftovers_apart_from_the_cache(tiny_cache):
    before = cache_info(tiny_cache)
    staged = tiny_cache / ".staging" / "demo0001-0123456789abcdef.123.0123abcd"  # what an interrupted run leaves
    staged.mkdir(parents=True)
    (staged / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group", "attributes": {"ctslice": "subject"}}')
    size = (staged / "zarr.json").stat().st_size
    after = cache_info(tiny_cache)
    assert after.size == before.size and (after.leftovers.files, after.leftovers.bytes) == (1, size)


def test_status_of_a_fresh_cache_is_up_to_date(tiny_dataset, tiny_cache):
    status = cache_status(tiny_cache)
    assert status.up_to_date and status.changes.unchanged == IDS and status.data == tiny_dataset.resolve()
    result = cli("cache", "status", tiny_cache)
    assert result.exit_code == 0 and "up to date" in result.output


def test_touched_files_are_unchanged(tiny_dataset, tiny_cache):
    ct = tiny_dataset / "demo0001" / "ct.nii.gz"
    os.utime(ct, ns=(ct.stat().st_atime_ns, ct.stat().st_mtime_ns + 5 * 10**9))
    status = cache_status(tiny_cache)
    assert status.up_to_date and list(status.changes.touched) == ["demo0001"] and "demo0001" in status.changes.unchanged


def test_same_size_new_bytes_is_modified(tiny_dataset, tiny_cache):
    mask = next((tiny_dataset / "demo0003" / "segmentations").iterdir())
    data = bytearray(mask.read_bytes())
    data[-10] ^= 0x01
    mask.write_bytes(bytes(data))  # same size, new time, new bytes: the hash decides
    assert cache_status(tiny_cache).changes.modified == ["demo0003"]


def test_status_lists_added_removed_modified_and_exits_1(tiny_dataset, tiny_cache):
    shutil.copytree(tiny_dataset / "demo0000", tiny_dataset / "extra01")
    shutil.rmtree(tiny_dataset / "demo0004")
    modify_subject(tiny_dataset, "demo0002")
    status = cache_status(tiny_cache)
    c = status.changes
    assert (c.added, c.removed, c.modified) == (["extra01"], ["demo0004"], ["demo0002"])
    assert status.changes.unchanged == ["demo0000", "demo0001", "demo0003"] and not status.changes.settings_changed
    assert not status.up_to_date
    result = cli("cache", "status", tiny_cache)
    assert result.exit_code == 1
    for line in ("added", "extra01", "removed", "demo0004", "modified", "demo0002", "stale"):
        assert line in result.output


def test_a_new_structure_is_a_settings_change(tiny_dataset, tiny_cache):
    seg = tiny_dataset / "demo0000" / "segmentations"
    shutil.copy(next(seg.iterdir()), seg / "brand_new_structure.nii.gz")
    status = cache_status(tiny_cache)
    assert status.changes.settings_changed and status.changes.modified == ["demo0000"] and not status.up_to_date
    assert status.changed_settings["label_map"][2] == {"added": ["brand_new_structure"], "removed": []}
    result = cli("cache", "status", tiny_cache)
    assert "label map" in result.output and "+brand_new_structure" in result.output


def test_status_against_another_copy_of_the_dataset(tiny_dataset, tiny_cache, tmp_path):
    copy = tmp_path / "elsewhere"
    shutil.copytree(tiny_dataset, copy)  # copy2 keeps sizes and times: the fast path says unchanged
    assert cache_status(tiny_cache, copy).up_to_date
    (copy / "demo0001" / "ct.nii.gz").unlink()
    result = cli("cache", "status", tiny_cache, "--data", copy, "--json")
    assert result.exit_code == 1 and json.loads(result.output)["modified"] == ["demo0001"]


def test_missing_manifest_is_one_line_exit_2(tmp_path):
    (tmp_path / "notacache").mkdir()
    for command in ("info", "status", "verify"):
        result = cli("cache", command, tmp_path / "notacache")
        assert result.exit_code == 2 and "Traceback" not in result.output
        assert result.output.strip().count("\n") == 0 and "no manifest.json" in result.output


def test_unknown_format_version_is_one_line_exit_2(tiny_cache):
    path = tiny_cache / "manifest.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "format_version": 99}))
    for command in ("info", "status", "verify"):
        result = cli("cache", command, tiny_cache)
        assert result.exit_code == 2 and "Traceback" not in result.output
        assert "format version 99" in result.output and str(tiny_cache) in result.output


def test_clean_refuses_a_folder_that_is_not_a_cache(tiny_dataset):
    result = cli("cache", "clean", tiny_dataset, "--yes")
    assert result.exit_code == 2 and "not a ctslice cache" in result.output
    assert (tiny_dataset / "demo0000" / "ct.nii.gz").is_file()


def test_clean_asks_then_removes_the_whole_cache(tiny_cache):
    declined = CliRunner().invoke(app, ["cache", "clean", str(tiny_cache)], input="n\n")
    assert declined.exit_code == 1 and (tiny_cache / "manifest.json").is_file()
    accepted = CliRunner().invoke(app, ["cache", "clean", str(tiny_cache)], input="y\n")
    assert accepted.exit_code == 0 and not tiny_cache.exists()


def test_clean_leftovers_keeps_the_cache(tiny_cache):
    (tiny_cache / ".staging" / "half-written").mkdir(parents=True)
    (tiny_cache / "slice_index" / "0123456789ab").mkdir()
    result = cli("cache", "clean", tiny_cache, "--leftovers")
    assert result.exit_code == 0 and "2 leftover(s) removed" in result.output
    assert not (tiny_cache / ".staging").exists() and not (tiny_cache / "slice_index" / "0123456789ab").exists()
    assert cache_info(tiny_cache).subjects == 5


def test_a_changed_official_split_is_stale_in_status_and_named_by_preprocess(tiny_dataset, tiny_cache):
    (tiny_dataset / "meta.csv").write_text("image_id;split\n" + "".join(
        f"{sid};{'val' if sid == 'demo0000' else 'train'}\n" for sid in IDS))
    status = cli("cache", "status", tiny_cache)
    assert status.exit_code == 1 and "demo0000 train -> val" in status.output and "demo0004 val -> train" in status.output
    assert json.loads(cli("cache", "status", tiny_cache, "--json").output)["split_moves"] == \
        ["demo0000 train -> val", "demo0004 val -> train"]
    run = cli("preprocess", tiny_dataset, "--cache", tiny_cache, "--workers", "0")
    assert run.exit_code == 0 and "split changed for 2 subject(s): demo0000 train -> val, demo0004 val -> train" \
        in run.output
    assert read_manifest(tiny_cache).split_of()["demo0000"] == "val"
    assert cli("cache", "status", tiny_cache).exit_code == 0


def test_preprocess_warns_when_a_split_ends_up_empty(tiny_dataset, tiny_cache):
    (tiny_dataset / "meta.csv").unlink()
    run = cli("preprocess", tiny_dataset, "--cache", tiny_cache, "--workers", "0", "--val-fraction", "0.999")
    assert run.exit_code == 0 and "warning: the train split is empty (5 subject(s) in val/test)" in run.output

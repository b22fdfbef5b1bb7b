"""verify finds every kind of damage, names subject and slice, and repair fixes it by reprocessing."""

import os
import shutil

import numpy as np
import zarr
from typer.testing import CliRunner

from ctslice.cache import store
from ctslice.cache.manifest import read_manifest, write_manifest
from ctslice.cache.verify import verify_cache
from ctslice.preprocess.repair import repair_cache
from ctslice.cli import app

SID = "demo0002"


def flip_byte(path, at=None):
    data = bytearray(path.read_bytes())
    data[len(data) // 2 if at is None else at] ^= 0xFF
    path.write_bytes(bytes(data))


def folder(cache, sid=SID):
    return read_manifest(cache).subjects[sid].path


def writable(cache, sid=SID):
    return zarr.open_group(zarr.storage.LocalStore(cache / folder(cache, sid)), mode="r+")


def test_fresh_cache_is_ok_and_every_chunk_is_checked(tiny_cache):
    report = verify_cache(tiny_cache)
    manifest = read_manifest(tiny_cache)
    assert report.ok, report.problems
    assert report.subjects == 5 and report.slices == manifest.totals["slices"]
    assert report.chunks == 2 * report.slices + 3 * report.subjects  # image+label per slice, 3 small arrays
    assert report.leftovers == []


def test_damaged_image_chunk_is_named_by_subject_and_slice(tiny_cache):
    flip_byte(store.chunk_path(tiny_cache, folder(tiny_cache), "image", 3))
    manifest = (tiny_cache / "manifest.json").read_bytes()
    report = verify_cache(tiny_cache)
    assert not report.ok and report.damaged_subjects == [SID]
    [problem] = report.problems
    assert (problem.subject, problem.slice) == (SID, 3) and "checksum" in problem.message
    result = CliRunner().invoke(app, ["cache", "verify", str(tiny_cache)])
    assert result.exit_code == 1
    assert f"problem: {SID} slice 3: image" in result.output and f"damaged subject(s): {SID}" in result.output
    assert (tiny_cache / "manifest.json").read_bytes() == manifest  # without --repair, verify only reads


def test_missing_chunks_folders_and_damaged_statistics(tiny_cache):
    store.chunk_path(tiny_cache, folder(tiny_cache), "label", 1).unlink()
    shutil.rmtree(tiny_cache / folder(tiny_cache, "demo0004"))
    flip_byte(tiny_cache / folder(tiny_cache, "demo0000") / "present" / "c" / "0" / "0")
    report = verify_cache(tiny_cache)
    assert report.damaged_subjects == ["demo0000", SID, "demo0004"]
    assert any(p.subject == "demo0000" and p.message.startswith("present: checksum") for p in report.problems)
    assert any(p.subject == SID and p.slice == 1 and "missing" in p.message for p in report.problems)
    assert any(p.subject == "demo0004" and "folder" in p.message for p in report.problems)


def test_label_values_outside_the_label_map_are_found(tiny_cache):
    writable(tiny_cache)["label"][2, 0, 0] = 200  # a valid chunk (good checksum) with a bad value
    report = verify_cache(tiny_cache)
    assert any(p.subject == SID and p.slice == 2 and "outside the label map" in p.message for p in report.problems)


def test_statistics_that_disagree_with_the_labels_are_found(tiny_cache):
    group = writable(tiny_cache)
    group["foreground"][4] = int(group["foreground"][4]) + 1
    report = verify_cache(tiny_cache)
    assert any(p.subject == SID and p.slice == 4 and "foreground" in p.message for p in report.problems)
    assert any(p.subject is None and f"subject {SID}" in p.message for p in report.problems)  # the index


def test_slice_index_and_splits_are_checked_against_the_subjects(tiny_cache):
    manifest = read_manifest(tiny_cache)
    fewer = {sid: r.path for sid, r in manifest.subjects.items() if sid != SID}
    manifest.slice_index = store.write_slice_index(tiny_cache, store.build_slice_index(tiny_cache, fewer))
    other = next(name for name, ids in manifest.splits.items() if SID not in ids)
    manifest.splits[other].append(SID)
    write_manifest(tiny_cache, manifest)
    messages = [str(p) for p in verify_cache(tiny_cache).problems]
    assert any("slice index lists other subjects" in m and SID in m for m in messages)
    assert any(f"subject {SID} is in both splits" in m for m in messages)


def test_damaged_slice_index_is_reported_without_a_subject(tiny_cache):
    manifest = read_manifest(tiny_cache)
    flip_byte(tiny_cache / manifest.slice_index / "foreground" / "c" / "0")
    report = verify_cache(tiny_cache)
    assert not report.ok and report.damaged_subjects == []
    assert "slice index" in str(report.problems[0])


def test_leftovers_are_reported_but_are_not_problems(tiny_cache):
    (tiny_cache / ".staging" / "demo0009-abc.123").mkdir(parents=True)
    shutil.copytree(tiny_cache / folder(tiny_cache), tiny_cache / "subjects" / "demo0002-0000000000000000")
    report = verify_cache(tiny_cache)
    assert report.ok
    assert report.leftovers == ["subjects/demo0002-0000000000000000", ".staging"]


def test_repair_reprocesses_only_the_damaged_subject(tiny_dataset, tiny_cache):
    before = read_manifest(tiny_cache)
    good_label = np.asarray(store.open_subject(tiny_cache, folder(tiny_cache))["label"][...])
    untouched = {sid: (tiny_cache / r.path / "zarr.json").stat().st_mtime_ns
                 for sid, r in before.subjects.items() if sid != SID}
    flip_byte(store.chunk_path(tiny_cache, folder(tiny_cache), "label", 0))
    result = repair_cache(tiny_cache, tiny_dataset)
    assert result.damaged == [SID] and result.preprocess.processed == [SID] and result.preprocess.ok
    assert verify_cache(tiny_cache).ok
    after = read_manifest(tiny_cache)
    assert after.subjects[SID].path != before.subjects[SID].path  # a new folder; the damaged one is a leftover
    assert np.array_equal(np.asarray(store.open_subject(tiny_cache, folder(tiny_cache))["label"][...]), good_label)
    assert after.splits == before.splits
    assert {sid: (tiny_cache / after.subjects[sid].path / "zarr.json").stat().st_mtime_ns
            for sid in untouched} == untouched


def test_cli_verify_exit_codes_and_repair_of_a_damaged_index(tiny_dataset, tiny_cache):
    ok = CliRunner().invoke(app, ["cache", "verify", str(tiny_cache)])
    assert ok.exit_code == 0 and "OK" in ok.output
    flip_byte(tiny_cache / read_manifest(tiny_cache).slice_index / "present" / "c" / "0" / "0")
    bad = CliRunner().invoke(app, ["cache", "verify", str(tiny_cache)])
    assert bad.exit_code == 1 and "problem: slice index" in bad.output and "Traceback" not in bad.output
    fixed = CliRunner().invoke(app, ["cache", "verify", str(tiny_cache), "--repair", "--data", str(tiny_dataset)])
    assert fixed.exit_code == 0, fixed.output
    assert "0 damaged subject(s) computed again, processed 0" in fixed.output and fixed.output.rstrip().endswith("OK")


def _folders(cache):
    return sorted(p.name for p in (cache / "subjects").iterdir() if p.is_dir())


def test_repair_refuses_a_partial_dataset_or_another_label_map_and_changes_nothing(tiny_dataset, tiny_cache, tmp_path):
    flip_byte(store.chunk_path(tiny_cache, folder(tiny_cache), "label", 0))
    manifest, folders = (tiny_cache / "manifest.json").read_bytes(), _folders(tiny_cache)
    partial = tmp_path / "partial"
    shutil.copytree(tiny_dataset / SID, partial / SID)  # only the damaged subject: the others would be dropped
    newmask = tmp_path / "newmask"
    shutil.copytree(tiny_dataset, newmask)  # one more structure: the labels would be renumbered
    shutil.copy(newmask / SID / "segmentations" / "liver.nii.gz", newmask / SID / "segmentations" / "zz_new.nii.gz")
    for data, reason in ((partial, "lacks 4 of the cache's 5 subject(s)"), (newmask, "+zz_new")):
        result = CliRunner().invoke(app, ["cache", "verify", str(tiny_cache), "--repair", "--data", str(data)])
        assert result.exit_code == 2 and reason in result.output and "nothing was changed" in result.output
        assert "Traceback" not in result.output
        assert (tiny_cache / "manifest.json").read_bytes() == manifest and _folders(tiny_cache) == folders


def test_repair_keeps_healthy_subjects_as_they_are_even_when_the_dataset_changed(tiny_dataset, tiny_cache):
    before = read_manifest(tiny_cache)
    flip_byte(store.chunk_path(tiny_cache, folder(tiny_cache), "image", 1))
    shutil.copytree(tiny_dataset / "demo0000", tiny_dataset / "demo0099")  # a new subject: not added by a repair
    (tiny_dataset / "meta.csv").write_text("image_id;split\ndemo0000;test\n")  # a new split: not applied either
    flip_byte(tiny_dataset / "demo0001" / "ct.nii.gz", at=-6)  # a healthy subject's source changed: not redone
    result = repair_cache(tiny_cache, tiny_dataset)
    assert result.preprocess.processed == [SID] and result.preprocess.removed == []
    after = read_manifest(tiny_cache)
    assert set(after.subjects) == set(before.subjects)
    assert {s: r.path for s, r in after.subjects.items() if s != SID} == \
           {s: r.path for s, r in before.subjects.items() if s != SID}
    assert after.splits == before.splits and after.label_map == before.label_map
    assert after.settings == before.settings and after.dataset == before.dataset
    assert verify_cache(tiny_cache).ok


def test_verify_output_does_not_tell_to_run_verify(tiny_cache):
    flip_byte(store.chunk_path(tiny_cache, folder(tiny_cache), "label", 0))
    index = tiny_cache / read_manifest(tiny_cache).slice_index
    os.symlink("/dev/zero", index / "link")  # damage read_slice_index reports with the readers' advice
    result = CliRunner().invoke(app, ["cache", "verify", str(tiny_cache)])
    assert result.exit_code == 1 and "checksum mismatch" in result.output and "not a regular file" in result.output
    assert "cache verify" not in result.output


def test_verify_and_repair_verifies_repairs_what_it_found_and_verifies_again(tiny_dataset, tiny_cache):
    from ctslice.preprocess.repair import verify_and_repair

    flip_byte(store.chunk_path(tiny_cache, folder(tiny_cache), "label", 0))
    seen = []
    only_checked = verify_and_repair(tiny_cache, checked=seen.append)
    assert not only_checked.ok and only_checked.repair is None and seen == [only_checked.verified]
    assert only_checked.verified.damaged_subjects == [SID]
    seen.clear()
    result = verify_and_repair(tiny_cache, repair=True, data=tiny_dataset, checked=seen.append)
    assert seen == [result.verified] and not result.verified.ok  # said before the repair started
    assert result.repair.damaged == [SID] and result.repair.preprocess.processed == [SID]
    assert result.verified_again.ok and result.ok
    again = verify_and_repair(tiny_cache, repair=True, data=tiny_dataset)
    assert again.ok and again.repair is None  # nothing found, nothing repaired

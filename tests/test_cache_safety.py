"""Nothing outside the cache is ever read or deleted: paths from the manifest stay inside, preprocess writes only into
a new, empty or ctslice folder apart from the dataset, clean removes only what the cache created, and a changed
manifest is caught by its checksum (issue 7, items 1-3)."""

import json
import os

import pytest
from typer.testing import CliRunner

from ctslice.cache.cleanup import remove_cache
from ctslice.cache.manifest import canonical_checksum, read_manifest
from ctslice.cache.reader import CacheReader
from ctslice.cli import app
from ctslice.errors import CacheError
from ctslice.preprocess.run import run_preprocess

from conftest import TINY_SETTINGS

CLI_SETTINGS = ["--workers", "0", "--spacing", "native", "--size", "40"]


def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def rewrite_manifest(cache, change):
    """Edit the manifest as a hostile user would: with a checksum that matches the edit."""
    path = cache / "manifest.json"
    data = json.loads(path.read_text())
    change(data)
    data["checksum"] = canonical_checksum(data)
    path.write_text(json.dumps(data))


def victim(tmp_path, name="victim"):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "precious.txt").write_text("keep me")
    return folder


@pytest.mark.parametrize("bad", ["../victim", "ABSOLUTE", "..", "subjects/../../victim", "subjects/x/../../.."])
def test_manifest_paths_outside_the_cache_are_refused_before_anything_is_read_or_deleted(
        tiny_dataset, tiny_cache, tmp_path, bad):
    target = victim(tmp_path)
    bad = str(target) if bad == "ABSOLUTE" else bad
    rewrite_manifest(tiny_cache, lambda d: d["subjects"]["demo0001"].update(path=bad))
    repair = cli("cache", "verify", tiny_cache, "--repair", "--data", tiny_dataset)
    assert repair.exit_code == 2 and "damaged manifest" in repair.output and "Traceback" not in repair.output
    for command in ("info", "verify"):
        assert cli("cache", command, tiny_cache).exit_code == 2
    with pytest.raises(CacheError, match="not a subjects/ entry"):
        CacheReader(tiny_cache)
    assert (target / "precious.txt").read_text() == "keep me"
    assert (tmp_path / "data" / "demo0000" / "ct.nii.gz").is_file()  # the cache's parent's other content


def test_a_subject_folder_linked_outside_the_cache_is_refused(tiny_cache, tmp_path):
    target = victim(tmp_path)
    record = read_manifest(tiny_cache).subjects["demo0001"]
    os.rename(tiny_cache / record.path, target / "moved")
    os.symlink(target, tiny_cache / record.path)
    with pytest.raises(CacheError, match="leads outside the cache"):
        read_manifest(tiny_cache)
    assert cli("cache", "clean", tiny_cache, "--leftovers").exit_code == 2
    assert (target / "precious.txt").is_file() and (target / "moved").is_dir()


def test_preprocess_refuses_a_dataset_inside_the_cache_folder(tiny_dataset, tmp_path):
    project = tmp_path / "proj"
    project.mkdir()
    os.rename(tiny_dataset, project / "subjects")
    (project / "meta.csv").write_text("image_id;split\n")
    (project / "slice_index").mkdir()
    (project / "slice_index" / "notes.txt").write_text("mine")
    before = sorted(p.relative_to(project) for p in project.rglob("*"))
    result = cli("preprocess", project / "subjects", "--cache", project, *CLI_SETTINGS)
    assert result.exit_code == 2 and "contains the dataset folder" in result.output
    inside = cli("preprocess", project / "subjects", "--cache", project / "subjects" / "cache", *CLI_SETTINGS)
    assert inside.exit_code == 2 and "lies inside the dataset folder" in inside.output
    assert sorted(p.relative_to(project) for p in project.rglob("*")) == before


def test_preprocess_refuses_a_folder_that_is_not_a_cache_and_a_file(tiny_dataset, tmp_path):
    other = victim(tmp_path, "project")
    (other / "subjects").mkdir()
    result = cli("preprocess", tiny_dataset, "--cache", other, *CLI_SETTINGS)
    assert result.exit_code == 2 and "not a ctslice cache" in result.output and str(other) in result.output
    assert sorted(p.name for p in other.iterdir()) == ["precious.txt", "subjects"]  # not even a lock file
    afile = tmp_path / "file"
    afile.write_text("x")
    result = cli("preprocess", tiny_dataset, "--cache", afile, *CLI_SETTINGS)
    assert result.exit_code == 2 and "is not a folder" in result.output and "Traceback" not in result.output


def test_clean_refuses_a_folder_whose_manifest_is_another_programs(tmp_path):
    app_dir = tmp_path / "webapp"
    app_dir.mkdir()
    (app_dir / "manifest.json").write_text(json.dumps({"name": "my web app"}))
    result = cli("cache", "clean", app_dir, "--yes")
    assert result.exit_code == 2 and "not a ctslice cache" in result.output
    assert (app_dir / "manifest.json").is_file()


def test_clean_removes_only_the_caches_own_entries_and_keeps_the_folder_if_others_remain(tiny_cache):
    (tiny_cache / "notes.txt").write_text("mine")
    (tiny_cache / "subjects" / "my-analysis").mkdir()
    result = cli("cache", "clean", tiny_cache, "--yes")
    assert result.exit_code == 0 and "folder kept" in result.output and "notes.txt" in result.output
    assert sorted(p.relative_to(tiny_cache).as_posix() for p in tiny_cache.rglob("*")) == [
        "notes.txt", "subjects", "subjects/my-analysis"]


def test_clean_of_a_cache_with_a_damaged_manifest_still_works_by_its_marker(tiny_cache):
    (tiny_cache / "manifest.json").write_text("{ not json")
    assert remove_cache(tiny_cache).kept == [] and not tiny_cache.exists()


def test_a_changed_manifest_fails_its_checksum_and_force_rebuilds(tiny_dataset, tiny_cache):
    path = tiny_cache / "manifest.json"
    text = path.read_text()
    path.write_text(text.replace('"stat"', '"stab"', 1))  # a renamed field: once a KeyError, now a checksum failure
    for command in ("info", "status", "verify"):
        result = cli("cache", command, tiny_cache)
        assert result.exit_code == 2 and "checksum" in result.output
        assert result.output.strip().count("\n") == 0 and "Traceback" not in result.output
    plain = cli("preprocess", tiny_dataset, "--cache", tiny_cache, *CLI_SETTINGS)
    assert plain.exit_code == 2 and "--force" in plain.output
    forced = cli("preprocess", tiny_dataset, "--cache", tiny_cache, *CLI_SETTINGS, "--force")
    assert forced.exit_code == 0, forced.output
    assert "unusable manifest" in forced.output and cli("cache", "verify", tiny_cache).exit_code == 0


def test_force_rebuilds_a_cache_whose_manifest_is_not_json(tiny_dataset, tiny_cache):
    (tiny_cache / "manifest.json").write_bytes(b"\x00garbage")
    report = run_preprocess(tiny_dataset, tiny_cache, TINY_SETTINGS, force=True)
    assert report.ok and len(read_manifest(tiny_cache).subjects) == 5


def test_a_reader_keeps_its_version_through_updates_and_names_a_later_removal(tiny_dataset, tiny_cache):
    import pickle

    from ctslice.bench.incremental import modify_subject
    from ctslice.data.dataset import SliceDataset

    old = SliceDataset(tiny_cache, "train")
    worker_copy = pickle.loads(pickle.dumps(old))  # what a DataLoader worker holds
    sid = old.reader.subjects[int(old.locate(0)[0])]
    before = [old[i]["image"].clone() for i in range(len(old))]
    modify_subject(tiny_dataset, sid, delta=5)
    assert run_preprocess(tiny_dataset, tiny_cache, TINY_SETTINGS).processed == [sid]
    # The epoch that spans the update reads the version it started with, in full, without errors.
    assert all((old[i]["image"] == before[i]).all() for i in range(len(old)))
    assert (worker_copy[0]["image"] == before[0]).all()
    with pytest.raises(CacheError, match="updated or removed while reading"):
        worker_copy.reader.manifest  # noqa: B018  (a newer manifest is not this reader's)
    assert run_preprocess(tiny_dataset, tiny_cache, TINY_SETTINGS).processed == []
    assert (old[0]["image"] == before[0]).all()  # two updates later: still held by the reader (cache/lease.py)
    old.reader.close()
    assert run_preprocess(tiny_dataset, tiny_cache, TINY_SETTINGS).processed == []
    with pytest.raises(CacheError, match="updated or removed while reading"):
        old[0]  # let go, then removed by the next run: said so, not called damage
    assert len(SliceDataset(tiny_cache, "train")) == len(old)  # reopening gives the new version


@pytest.mark.parametrize("rel", ["..", ".", "", "subjects", "subjects/..", ".staging/..", "subjects/notes",
                                 "slice_index/../x", "/etc", "manifest.json/.."])
def test_deletion_refuses_any_path_the_cache_does_not_create(tiny_cache, rel):
    from ctslice.cache.layout import remove_owned

    assert remove_owned(tiny_cache, rel) is not None
    assert read_manifest(tiny_cache).subjects and (tiny_cache / "subjects").is_dir()

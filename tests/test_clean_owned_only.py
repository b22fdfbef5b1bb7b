"""`cache clean` deletes only what carries ctslice's mark (issue 15): a folder holding a copy of a manifest and the
user's own files named like cache entries keeps those files, each reported; a cache of the previous version
(subject groups without the mark) is still removed completely."""

import json
import shutil

from typer.testing import CliRunner

from ctslice.cache.cleanup import remove_cache
from ctslice.cache.manifest import read_manifest
from ctslice.cli import app


def _user_files(folder, listed):
    files = {
        "splits.csv": "subject,split\nmine,train\n",
        "label_map.json": '{"0": "background", "1": "my structure"}\n',
        "zarr.json": '{"zarr_format": 3, "node_type": "group", "attributes": {"project": "mine"}}',
        ".staging/notes.txt": "my notes\n",
        "subjects/x-0123456789abcdef/data.txt": "my data\n",
        f"{listed}/results.txt": "a folder named like a listed subject, but mine\n",
    }
    for rel, text in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
    return files


def test_clean_of_a_folder_with_a_copied_manifest_keeps_and_reports_the_users_files(tiny_cache, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    shutil.copy(tiny_cache / "manifest.json", folder / "manifest.json")
    listed = next(iter(read_manifest(folder).subjects.table.values())).path
    files = _user_files(folder, listed)
    result = CliRunner().invoke(app, ["cache", "clean", str(folder), "--yes"])
    assert "Traceback" not in result.output, result.output
    for rel, text in files.items():
        assert (folder / rel).read_text() == text, rel
    for name in ("splits.csv", "label_map.json", "zarr.json", "x-0123456789abcdef", listed.split("/")[1]):
        assert name in result.output, (name, result.output)
    assert "kept" in result.output


def _as_previous_version(cache):
    """Subject and slice-index groups as ctslice wrote them before they carried the `ctslice` mark."""
    for doc in list((cache / "subjects").glob("*/zarr.json")) + list((cache / "slice_index").glob("*/zarr.json")):
        data = json.loads(doc.read_text())
        assert data["attributes"].pop("ctslice") in ("subject", "slice_index")
        doc.write_text(json.dumps(data))


def test_a_cache_of_the_previous_version_is_still_removed_completely(tiny_cache):
    _as_previous_version(tiny_cache)
    staged = tiny_cache / ".staging"
    shutil.copytree(tiny_cache / next(iter(read_manifest(tiny_cache).subjects.values())).path,
                    staged / f"{next(iter(read_manifest(tiny_cache).subjects.values())).path[9:]}.77.0123abcd")
    result = remove_cache(tiny_cache)
    assert result.kept == [] and not tiny_cache.exists()


def test_a_new_cache_marks_its_groups(tiny_cache):
    from ctslice.cache import marks

    m = read_manifest(tiny_cache)
    assert all(marks.group_attributes(tiny_cache / r.path)["ctslice"] == "subject" for r in m.subjects.values())
    assert marks.group_attributes(tiny_cache / m.slice_index)["ctslice"] == "slice_index"

"""files.write_atomic: the one writer of files that must never be seen half-written."""

from __future__ import annotations

import errno
import os

import pytest

from ctslice.files import temporary_name, write_atomic


def test_text_bytes_and_a_writer_replace_the_file_whole(tmp_path):
    path = tmp_path / "a.json"
    assert write_atomic(path, "première", durable=True) == path and path.read_text(encoding="utf-8") == "première"
    write_atomic(path, b"\x00\x01", durable=False)
    assert path.read_bytes() == b"\x00\x01"
    write_atomic(path, lambda tmp: tmp.write_bytes(b"by a writer"), durable=True)
    assert path.read_bytes() == b"by a writer" and [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_the_temporary_name_is_hidden_beside_the_file_or_in_temp_dir(tmp_path):
    seen = []
    (tmp_path / "sub").mkdir()
    write_atomic(tmp_path / "sub" / "x.nii.gz", lambda tmp: seen.append(tmp) or tmp.write_text("x"), durable=False,
                 temp_dir=tmp_path, suffix=".nii.gz")
    assert seen == [tmp_path / f".x.nii.gz.{os.getpid()}.tmp.nii.gz"] and (tmp_path / "sub" / "x.nii.gz").is_file()
    assert temporary_name(tmp_path / "m.json") == tmp_path / f".m.json.{os.getpid()}.tmp"


@pytest.mark.parametrize("durable", [True, False])
def test_a_full_disk_names_the_final_file_and_leaves_the_old_one(tmp_path, monkeypatch, durable):
    path = tmp_path / "history.json"
    path.write_text("old")

    def full(tmp):
        tmp.write_text("half")
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp))

    with pytest.raises(OSError) as err:
        write_atomic(path, full, durable=durable)
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(path)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["history.json"]


def test_a_failed_rename_or_a_writer_error_removes_the_temporary(tmp_path, monkeypatch):
    path = tmp_path / "c.pth"

    def boom(tmp):
        tmp.write_text("half")
        raise RuntimeError("not an OSError: passes as it is")

    with pytest.raises(RuntimeError, match="passes as it is"):
        write_atomic(path, boom, durable=True)
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(PermissionError(errno.EACCES, "denied")))
    with pytest.raises(PermissionError, match="c.pth"):
        write_atomic(path, "x", durable=False)
    assert list(tmp_path.iterdir()) == []


def test_durable_syncs_the_file_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
                        or real_fsync(fd))
    monkeypatch.setattr(os, "replace", lambda a, b: events.append(("replace", str(b))) or real_replace(a, b))
    path = tmp_path / "manifest.json"
    write_atomic(path, "{}", durable=True)
    tmp = str(temporary_name(path))
    assert events == [("fsync", tmp), ("replace", str(path)), ("fsync", str(tmp_path))]
    events.clear()
    write_atomic(path, "{}", durable=False)
    assert events == [("replace", str(path))]

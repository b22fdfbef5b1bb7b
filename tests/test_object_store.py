"""A cache on object storage (`--cache s3://bucket/prefix`), against a real S3-compatible server the suite starts
(moto's server mode on 127.0.0.1, tests/object_store_server.py): build with 2 dask workers and read back bit for
bit, train from it, a killed preprocess, verify of the store's objects, no secret in any output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import TINY_SETTINGS
from object_store_server import SECRET, boto, s3_endpoint, s3_url  # noqa: F401  (fixtures)
from ctslice.cache.location import open_cache
from ctslice.cache.manifest import read_manifest
from ctslice.cache.reader import CacheReader
from ctslice.cli import app
from ctslice.preprocess.run import run_preprocess


def every_slice(cache: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    reader = CacheReader(cache)
    try:
        return {sid: tuple(np.stack(a) for a in zip(*(reader.read(sid, z) for z in range(reader.shapes[s, 0]))))
                for s, sid in enumerate(reader.subjects)}
    finally:
        reader.close()


def fresh_machine(monkeypatch, tmp_path: Path, name: str) -> None:
    """Another node: its own, empty local mirror."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / name))


@pytest.mark.parametrize("layout", ["slices", "shards"])
def test_build_with_two_workers_reads_back_like_a_local_build(tiny_dataset, tiny_cache, s3_url, tmp_path,
                                                               monkeypatch, layout):
    import dataclasses

    report = run_preprocess(tiny_dataset, open_cache(s3_url, writing=True),
                            dataclasses.replace(TINY_SETTINGS, workers=2, layout=layout))
    assert report.ok and len(report.processed) == 5
    fresh_machine(monkeypatch, tmp_path, "node2")
    mirror = open_cache(s3_url)
    assert not list((mirror / "subjects").glob("*/image"))  # subjects are fetched on first use, not on open
    local, remote = read_manifest(tiny_cache), read_manifest(mirror)
    assert (remote.label_map, remote.splits) == (local.label_map, local.splits)
    expected, got = every_slice(tiny_cache), every_slice(mirror)
    assert expected.keys() == got.keys()
    for sid, (image, label) in expected.items():
        assert np.array_equal(got[sid][0], image) and got[sid][0].dtype == image.dtype
        assert np.array_equal(got[sid][1], label) and got[sid][1].dtype == label.dtype


def test_train_one_epoch_from_the_store_then_evaluate(cache32, s3_url, tmp_path, monkeypatch):
    data = tmp_path / "data"  # cache32's own dataset, preprocessed again into the store
    import shutil

    shutil.copytree(Path(read_manifest(cache32).dataset["root"]), data)
    pre = CliRunner().invoke(app, ["preprocess", str(data), "--cache", s3_url, "--workers", "0", "--size", "32",
                                   "--spacing", "native"])
    assert pre.exit_code == 0, pre.output
    # A new cache on a store takes the "shards" layout unless told otherwise: one object per array and subject.
    assert read_manifest(open_cache(s3_url)).settings.layout == "shards"
    fresh_machine(monkeypatch, tmp_path, "trainer")  # an empty mirror: the loader's (spawned) worker fetches
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--cache", s3_url, "--out", str(run), "--epochs", "1",
                                      "--batch-size", "8", "--workers", "1", "--wandb", "disabled", "--config",
                                      str(_tiny_model(tmp_path))])
    assert result.exit_code == 0, result.output
    assert "1 epochs, final val Dice" in result.output
    config = json.loads((run / "config.json").read_text())
    assert config["cache"] == s3_url  # the store, not this machine's mirror, is what the run was trained on
    scored = CliRunner().invoke(app, ["evaluate", "--checkpoint", str(run / "checkpoint_last.pth"), "--cache", s3_url,
                                      "--out", str(tmp_path / "eval"), "--workers", "0", "--device", "cpu"])
    assert scored.exit_code == 0, scored.output
    assert json.loads((tmp_path / "eval" / "evaluation.json").read_text())["settings"]["cache"] == s3_url
    written = [p.read_bytes() for p in (*run.rglob("*"), *(tmp_path / "eval").rglob("*"), *(tmp_path / "xdg").rglob(
        "*"), *(tmp_path / "trainer").rglob("*")) if p.is_file()]
    assert not any(SECRET.encode() in b for b in written)
    assert SECRET not in pre.output + result.output + scored.output


def _tiny_model(tmp_path: Path) -> Path:
    toml = tmp_path / "tiny.toml"
    toml.write_text("[train]\nval_images = 1\nlog_every = 1\nkeep_checkpoints = 1\n[model]\nbase_width = 4\n"
                    "depth = 3\n")
    return toml


# Preprocess into the store, pausing after each finished subject until the parent kills it (tests/
# test_crash_and_lock.py does the same on disk).
CHILD = """
import sys
from pathlib import Path

def pause(*_):
    print("done", flush=True)
    sys.stdin.readline()

from ctslice.cache.location import open_cache
from ctslice.config import PreprocessConfig
from ctslice.preprocess.run import run_preprocess
run_preprocess(Path(sys.argv[1]), open_cache(sys.argv[2], writing=True), PreprocessConfig(spacing=None, size=40,
               workers=0), progress=pause)
"""


def test_killed_preprocess_leaves_the_previous_version_and_the_next_run_completes(tiny_dataset, s3_url, tmp_path,
                                                                                     monkeypatch):
    assert run_preprocess(tiny_dataset, open_cache(s3_url, writing=True), TINY_SETTINGS).ok
    fresh_machine(monkeypatch, tmp_path, "reader")
    before = every_slice(open_cache(s3_url))
    for sid in ("demo0001", "demo0003"):  # two subjects change: the kill lands after the first is uploaded
        ct = tiny_dataset / sid / "ct.nii.gz"
        ct.write_bytes(ct.read_bytes())  # new mtime and the same bytes would be "touched"; change the content:
        _shift_ct(ct)
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(tiny_dataset), s3_url], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "XDG_CACHE_HOME":
                                                                                  str(tmp_path / "writer")})
    assert proc.stdout.readline().strip() == b"done", proc.communicate()[1].decode()[-2000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    fresh_machine(monkeypatch, tmp_path, "reader2")
    assert _same(every_slice(open_cache(s3_url)), before)  # the store still serves the previous version whole
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "writer"))
    rerun = run_preprocess(tiny_dataset, open_cache(s3_url, writing=True), TINY_SETTINGS)
    assert rerun.ok and len(rerun.reused) == 1 and len(rerun.processed) == 1  # the upload before the kill counts
    assert CliRunner().invoke(app, ["cache", "verify", s3_url]).exit_code == 0
    superseded = {r.path for sid, r in read_manifest(open_cache(s3_url)).subjects.table.items()}
    run_preprocess(tiny_dataset, open_cache(s3_url, writing=True), TINY_SETTINGS)  # the grace run is over
    bucket, prefix = s3_url[5:].split("/", 1)
    keys = {o["Key"] for o in boto(os.environ["AWS_ENDPOINT_URL"]).list_objects_v2(Bucket=bucket)["Contents"]}
    folders = {k[len(prefix) + 1:].rsplit("/", 1)[0] for k in keys if k.endswith("/zarr.json")}
    subjects = {f.split("/")[0] + "/" + f.split("/")[1] for f in folders if f.startswith("subjects/") and "/" in f}
    assert subjects - {"subjects/zarr.json"} == superseded  # the previous version's changed folders are gone


def _shift_ct(path: Path) -> None:
    import nibabel as nib

    img = nib.load(path)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj) + 7, img.affine, img.header), path)


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k][i], b[k][i]) for k in a for i in (0, 1))


@pytest.mark.parametrize("layout", ["slices", "shards"])
def test_verify_checks_the_stores_objects_and_names_the_damaged_one(tiny_dataset, s3_url, layout):
    import dataclasses

    settings = dataclasses.replace(TINY_SETTINGS, layout=layout)
    assert run_preprocess(tiny_dataset, open_cache(s3_url, writing=True), settings).ok
    mirror = open_cache(s3_url)
    every_slice(mirror)  # the mirror now holds good copies of every subject
    row = read_manifest(mirror).subjects.table["demo0002"]
    bucket, prefix = s3_url[5:].split("/", 1)
    key = f"{prefix}/{row.path}/image/c/{0 if layout == 'shards' else 2}/0/0"  # slice 2, or the one shard
    client = boto(os.environ["AWS_ENDPOINT_URL"])
    body = bytearray(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    body[len(body) // 2] ^= 0x10
    client.put_object(Bucket=bucket, Key=key, Body=bytes(body))
    result = CliRunner().invoke(app, ["cache", "verify", s3_url])
    assert result.exit_code == 1, result.output
    assert f"s3://{bucket}/{key}" in result.output and "checksum" in result.output
    assert "damaged subject(s): demo0002" in result.output


def test_no_secret_in_outputs_or_errors(tiny_dataset, s3_url):
    assert run_preprocess(tiny_dataset, open_cache(s3_url, writing=True), TINY_SETTINGS).ok
    info = CliRunner().invoke(app, ["cache", "info", s3_url, "--json"])
    assert info.exit_code == 0 and s3_url in info.output
    bucket = s3_url[5:].split("/")[0]
    missing = CliRunner().invoke(app, ["cache", "info", f"s3://{bucket}-gone/cache"])  # no such bucket
    bad_key = CliRunner().invoke(app, ["cache", "info", s3_url, "--storage-option", f"secret_key={SECRET}"])
    given = CliRunner().invoke(app, ["cache", "info", s3_url, "--storage-option",
                                     f"secret_access_key={SECRET}-wrong-but-moto-takes-any"])
    assert missing.exit_code == 2 and "error:" in missing.output and bad_key.exit_code == 2
    assert "Traceback" not in missing.output + bad_key.output and "secret_key" in bad_key.output  # named, no value
    assert given.exit_code == 0
    status = CliRunner().invoke(app, ["cache", "status", s3_url, "--data", str(tiny_dataset)])
    assert status.exit_code == 0 and "up to date" in status.output, status.output
    for out in (info.output, missing.output, bad_key.output, given.output, status.output):
        assert SECRET not in out


def test_mirror_keeps_to_its_size_bound_and_refetches(tiny_dataset, s3_url, tmp_path, monkeypatch):
    from ctslice.cache.mirror import remote_of
    from ctslice.cache.sizes import folder_size

    assert run_preprocess(tiny_dataset, open_cache(s3_url, writing=True), TINY_SETTINGS).ok
    fresh_machine(monkeypatch, tmp_path, "small")
    mirror = open_cache(s3_url)
    remote_of(mirror).limit_bytes = 1  # at most one subject folder stays
    reader = CacheReader(mirror)
    first = reader.read(reader.subjects[0], 0)
    for s in range(1, len(reader.subjects)):
        reader.read(s, 0)
        assert len([p for p in (mirror / "subjects").iterdir() if p.is_dir()]) == 1
    again = reader.read(reader.subjects[0], 0)  # evicted, fetched again
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert folder_size(mirror / "subjects").bytes < 2 * max(r.size[1] for r in reader.manifest.subjects.table.values())


def test_bench_store_reads_its_own_store_in_either_layout(tmp_path):
    """`ctslice bench store` with no --cache starts its own S3 server, builds a demo cache into it and prints the
    three rows (local disk, cold and warm mirror) with the ratio to local disk."""
    result = CliRunner().invoke(app, ["bench", "store", "--out", str(tmp_path), "--subjects", "3", "--size", "32",
                                      "--min-slices", "4", "--max-slices", "5", "--layout", "shards"])
    assert result.exit_code == 0, result.output
    assert "shards layout" in " ".join(result.output.split())  # the log line may wrap on a narrow terminal
    for row in ("local disk", "store, first epoch (cold mirror)", "store, second epoch (warm mirror)"):
        line = [line for line in result.output.splitlines() if line.startswith(row)][-1]  # the table's, not the log's
        assert float(line.split()[-1]) > 0  # a ratio to local disk was computed

"""`cache show` and `cache stats` write PNGs of a cache; the overlay follows the colour table."""

import numpy as np
import pytest
from typer.testing import CliRunner

from ctslice.cache.manifest import read_manifest
from ctslice.cli import app
from ctslice.colors import label_color
from ctslice.errors import CtsliceError
from ctslice.view.overlay import overlay_rgb, parse_window, view

PNG = b"\x89PNG"


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.mark.parametrize("options", [[], ["--slice", "3"], ["--axis", "coronal", "--window", "bone"],
                                     ["--axis", "sagittal", "--window", "1500,-500"]])
def test_show_writes_a_png(tiny_cache, tmp_path, options):
    sid = sorted(read_manifest(tiny_cache).subjects)[0]
    out = tmp_path / "show.png"
    result = run("cache", "show", tiny_cache, sid, "--out", out, *options)
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:4] == PNG and out.stat().st_size > 5000


def test_show_names_an_unknown_subject_or_slice(tiny_cache, tmp_path):
    result = run("cache", "show", tiny_cache, "nobody", "--out", tmp_path / "x.png")
    assert result.exit_code == 2 and "no subject 'nobody'" in result.output
    sid = sorted(read_manifest(tiny_cache).subjects)[0]
    result = run("cache", "show", tiny_cache, sid, "--slice", "999", "--out", tmp_path / "x.png")
    assert result.exit_code == 2 and "out of range" in result.output


def test_stats_prints_the_table_and_writes_figures(tiny_cache, tmp_path):
    result = run("cache", "stats", tiny_cache, "--out", tmp_path / "stats")
    assert result.exit_code == 0, result.output
    assert "liver" in result.output and "foreground HU: mean" in result.output
    for name in ("structures.png", "dataset.png"):
        assert (tmp_path / "stats" / name).read_bytes()[:4] == PNG


def test_overlay_colours_labels_and_windows_the_ct():
    image = np.array([[-1000, 40], [1000, 40]], np.int16)
    label = np.array([[0, 0], [0, 2]], np.uint8)
    rgb = overlay_rgb(image, label, 3, parse_window("soft"), alpha=1.0)
    assert rgb[0, 0].tolist() == [0, 0, 0] and rgb[1, 0].tolist() == [1, 1, 1]
    assert np.allclose(rgb[0, 1], 0.5) and np.allclose(rgb[1, 1] * 255, label_color(2))
    with pytest.raises(CtsliceError, match="WIDTH,LEVEL"):
        parse_window("soft tissue")


def test_views_put_superior_up():
    volume = np.arange(2 * 3 * 4).reshape(2, 3, 4)  # (slice inferior->superior, row, column)
    assert view(volume, "coronal", 1)[0].tolist() == volume[1, 1].tolist()  # top row: the superior slice
    assert view(volume, "sagittal", 0).shape == (2, 3)


def _sid(cache):
    return sorted(read_manifest(cache).subjects)[0]


def _chunk(cache, sid, array, z):
    from ctslice.cache import store
    return store.chunk_path(cache, read_manifest(cache).subjects[sid].path, array, z)


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.unlink(), "chunk file"),
    (lambda p: p.write_bytes(p.read_bytes()[:-1] + bytes([p.read_bytes()[-1] ^ 1])), "checksum mismatch")])
def test_show_reads_through_the_checked_reader_and_names_subject_and_slice(tiny_cache, tmp_path, damage, message):
    sid = _sid(tiny_cache)
    damage(_chunk(tiny_cache, sid, "label", 2))
    for options in (["--slice", "2"], ["--axis", "coronal"]):
        result = run("cache", "show", tiny_cache, sid, "--out", tmp_path / "x.png", *options)
        assert result.exit_code == 2 and f"subject {sid} slice 2 (label)" in result.output and message in result.output
        assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "x.png").exists()


def test_show_out_and_option_values(tiny_cache, tmp_path, monkeypatch):
    sid = _sid(tiny_cache)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "folder").mkdir()
    result = run("cache", "show", tiny_cache, sid, "--slice", "1", "--out", "folder")  # a folder: default name in it
    assert result.exit_code == 0 and (tmp_path / "folder" / f"{sid}-axial-1.png").read_bytes()[:4] == PNG
    result = run("cache", "show", tiny_cache, sid, "--slice", "1", "--out", "s14", "--axis", "Coronal")
    assert result.exit_code == 0 and "wrote s14.png" in result.output and (tmp_path / "s14.png").is_file()
    for options, message in ((["--out", "nodir/x.png"], "folder nodir does not exist"),
                             (["--out", "x.txt"], "ending in .png"),
                             (["--axis", "foo"], "axis must be axial, coronal, sagittal"),
                             (["--window", "nan,40"], "finite"), (["--window", "inf,40"], "finite")):
        result = run("cache", "show", tiny_cache, sid, *options)
        assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output, options
    assert not list(tmp_path.glob("x*")) and not (tmp_path / "nodir").exists()


def test_stats_refuses_a_file_as_out_before_printing(tiny_cache, tmp_path):
    (tmp_path / "file").write_text("keep")
    result = run("cache", "stats", tiny_cache, "--out", tmp_path / "file")
    assert result.exit_code == 2 and "not a folder" in result.output and "liver" not in result.output
    assert (tmp_path / "file").read_text() == "keep"

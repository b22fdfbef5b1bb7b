"""`predict` writes only files it created, where it was told (issue 15): never a dataset's CT or masks, never
into a subject's folder, its segmentations/ or a dataset folder, never over a file it did not write; --split-masks
writes into a new folder; --overwrite replaces only predict's own earlier outputs (its ledger proves them)."""

import shutil

import pytest
from typer.testing import CliRunner

from builders import ct_volume, save
from checkpoints import make_checkpoint
from ctslice.cli import app
from ctslice.preprocess.sources import discover


def _snapshot(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _predict(*args):
    result = CliRunner().invoke(app, ["predict", *map(str, args), "--device", "cpu"])
    assert "Traceback" not in result.output, result.output
    return result


@pytest.fixture
def setup(tiny_cache, tiny_dataset, tmp_path):
    ckpt = make_checkpoint(tiny_cache, tmp_path / "run" / "ckpt.pth")
    ct = save(tmp_path / "new" / "x.nii.gz", ct_volume((20, 20, 6)))
    return ckpt, ct, tiny_dataset


def _subjects(data):
    return sorted(p.name for p in data.iterdir() if p.is_dir())


def test_out_naming_a_subject_in_a_dataset_with_split_masks_replaces_no_mask(setup):
    ckpt, ct, data = setup
    sid = _subjects(data)[0]
    before = _snapshot(data)
    result = _predict(ct, "--checkpoint", ckpt, "--out", data / f"{sid}.nii.gz", "--split-masks")
    assert result.exit_code == 2 and "is a dataset folder" in result.output, result.output
    assert _snapshot(data) == before


@pytest.mark.parametrize("target", ["ct.nii.gz", "segmentations/liver.nii.gz", "other_seg.nii.gz"])
def test_out_onto_a_subjects_ct_or_mask_or_into_its_folder_is_refused(setup, target):
    ckpt, ct, data = setup
    sid = _subjects(data)[1]
    before = _snapshot(data)
    result = _predict(ct, "--checkpoint", ckpt, "--out", data / sid / target, "--overwrite")
    assert result.exit_code == 2 and "dataset" in result.output, result.output
    assert _snapshot(data) == before


def test_a_ct_inside_a_subject_folder_gets_no_prediction_beside_it_by_default(setup):
    ckpt, _, data = setup
    sid = _subjects(data)[0]
    before = _snapshot(data)
    result = _predict(data / sid / "ct.nii.gz", "--checkpoint", ckpt)
    assert result.exit_code == 2 and "subject's folder" in result.output and "--out" in result.output
    assert _snapshot(data) == before and not discover(data).problems


def test_an_existing_file_is_replaced_only_with_overwrite_and_only_if_predict_wrote_it(setup, tmp_path):
    ckpt, ct, _ = setup
    out = tmp_path / "out"
    mine = save(out / "x_seg.nii.gz", ct_volume((3, 3, 3)))  # the user's own file under the output's name
    kept = mine.read_bytes()
    for extra in ([], ["--overwrite"]):
        result = _predict(ct, "--checkpoint", ckpt, "--out", out, *extra)
        assert result.exit_code == 2 and "not replaced" in result.output, result.output
        assert mine.read_bytes() == kept
    mine.unlink()
    assert _predict(ct, "--checkpoint", ckpt, "--out", out).exit_code == 0
    first = _snapshot(out)
    result = _predict(ct, "--checkpoint", ckpt, "--out", out)  # its own output, but no --overwrite
    assert result.exit_code == 2 and "--overwrite" in result.output and _snapshot(out) == first
    assert _predict(ct, "--checkpoint", ckpt, "--out", out, "--overwrite").exit_code == 0
    (out / "x_seg.ctbl").write_text("my edited colours\n")  # changed by the user since: no longer predict's
    result = _predict(ct, "--checkpoint", ckpt, "--out", out, "--overwrite")
    assert result.exit_code == 2 and "x_seg.ctbl" in result.output and "not written by ctslice" in result.output
    assert (out / "x_seg.ctbl").read_text() == "my edited colours\n"


def test_split_masks_write_only_into_a_folder_predict_created(setup, tmp_path):
    ckpt, ct, data = setup
    out = tmp_path / "out"
    sid = _subjects(data)[0]
    shutil.copytree(data / sid / "segmentations", out / "x_seg" / "segmentations")  # someone's masks, same name
    before = _snapshot(out)
    for extra in ([], ["--overwrite"]):
        result = _predict(ct, "--checkpoint", ckpt, "--out", out, "--split-masks", *extra)
        assert result.exit_code == 2 and "x_seg" in result.output, result.output
        assert _snapshot(out) == before
    shutil.rmtree(out)
    assert _predict(ct, "--checkpoint", ckpt, "--out", out, "--split-masks").exit_code == 0
    masks = sorted((out / "x_seg" / "segmentations").glob("*.nii.gz"))
    assert masks and (out / "x_seg" / ".ctslice-predictions.json").is_file()
    assert _predict(ct, "--checkpoint", ckpt, "--out", out, "--split-masks", "--overwrite").exit_code == 0
    save(masks[0], ct_volume((3, 3, 3)))  # the user replaced one mask: --overwrite keeps it
    kept = masks[0].read_bytes()
    result = _predict(ct, "--checkpoint", ckpt, "--out", out, "--split-masks", "--overwrite")
    assert result.exit_code == 2 and masks[0].name in result.output and masks[0].read_bytes() == kept

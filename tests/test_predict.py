"""`ctslice predict`: CTs in no cache, labelled on their own grid with their own header; a folder with bad files."""

import nibabel as nib
import numpy as np
from typer.testing import CliRunner

from builders import save
from checkpoints import make_checkpoint
from ctslice.cli import app
from ctslice.config import EvaluateConfig, LoaderConfig
from ctslice.evaluate.predict import run_predict

CFG = EvaluateConfig(device="cpu")
LOADER = LoaderConfig(batch_size=4)


def _ct_with_header(path, shape=(30, 26, 7)):
    """A CT in LPS-like orientation with the header quirks of real data: sform code 2, qform code 0, mm units."""
    affine = np.array([[-1.4, 0, 0, 20.0], [0, -1.4, 0, 18.0], [0, 0, 4.5, -30.0], [0, 0, 0, 1]])
    img = nib.Nifti1Image(np.random.default_rng(0).integers(-1000, 1000, shape).astype(np.int16), affine)
    img.header.set_sform(affine, code=2)
    img.header.set_qform(None, code=0)
    img.header.set_xyzt_units("mm", "sec")
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, path)
    return nib.load(path)


def test_predict_gives_the_cts_shape_affine_and_header(tiny_cache, tmp_path):
    ckpt = make_checkpoint(tiny_cache, tmp_path / "run" / "ckpt.pth")
    ct = _ct_with_header(tmp_path / "in" / "patient.nii.gz")
    [outcome] = run_predict(ckpt, tmp_path / "in" / "patient.nii.gz", None, CFG, LOADER)
    assert outcome.error is None and outcome.output == tmp_path / "in" / "patient_seg.nii.gz"
    seg = nib.load(outcome.output)
    assert seg.shape == ct.shape and np.array_equal(seg.affine, ct.affine) and seg.get_data_dtype() == np.uint8
    for field in ("sform_code", "qform_code", "xyzt_units", "pixdim"):
        assert np.array_equal(seg.header[field], ct.header[field]), field
    assert (tmp_path / "in" / "patient_seg.ctbl").is_file() and (tmp_path / "in" / "patient_seg.labels.json").is_file()


def test_a_folder_with_bad_files_predicts_the_others_and_exits_1(tiny_cache, tmp_path):
    ckpt = make_checkpoint(tiny_cache, tmp_path / "run" / "ckpt.pth", context_slices=3)
    folder = tmp_path / "cts"
    _ct_with_header(folder / "a.nii.gz")
    _ct_with_header(folder / "c.nii", shape=(20, 20, 3))
    (folder / "b.nii.gz").write_text("not a NIfTI file")
    save(folder / "flat.nii.gz", np.zeros((8, 8), np.int16), np.eye(4))
    outcomes = {o.input.name: o for o in run_predict(ckpt, folder, None, CFG, LOADER)}
    assert outcomes["a.nii.gz"].output == folder / "predictions" / "a_seg.nii.gz"  # never where preprocess looks
    assert nib.load(outcomes["c.nii"].output).shape == (20, 20, 3)
    assert "b.nii.gz" in outcomes["b.nii.gz"].error and "corrupt" in outcomes["b.nii.gz"].error
    assert "flat.nii.gz" in outcomes["flat.nii.gz"].error and "3D" in outcomes["flat.nii.gz"].error
    result = CliRunner().invoke(app, ["predict", str(folder), "--checkpoint", str(ckpt), "--out",
                                      str(tmp_path / "o"), "--device", "cpu"])
    assert result.exit_code == 1
    assert "2 of 4 file(s) failed" in result.output and (tmp_path / "o" / "a_seg.nii.gz").is_file()

"""Where `predict` writes: never over an input, never two outputs on one path, never where preprocess would take
a prediction for a subject; path problems are one-line errors before the model runs; no temporary file survives
a failed write; a CT wider than the model's input is predicted with a warning."""

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from builders import ct_volume, save
from checkpoints import edit_checkpoint, make_checkpoint
from ctslice.cli import app
from ctslice.config import EvaluateConfig, LoaderConfig
from ctslice.errors import CtsliceError
from ctslice.evaluate.outputs import plan_outputs
from ctslice.evaluate.predict import run_predict
from ctslice.files import write_atomic
from ctslice.preprocess.sources import discover

CFG = EvaluateConfig(device="cpu")
LOADER = LoaderConfig(batch_size=4)


def _cts(folder, *names):
    for name in names:
        save(folder / name, ct_volume())
    return folder


def test_an_output_that_is_the_input_is_refused_and_the_ct_is_untouched(tiny_cache, tmp_path):
    ckpt = make_checkpoint(tiny_cache, tmp_path / "run" / "ckpt.pth")
    ct = _cts(tmp_path / "p2", "ct.nii.gz") / "ct.nii.gz"
    before = ct.read_bytes()
    runner = CliRunner()
    result = runner.invoke(app, ["predict", str(ct), "--checkpoint", str(ckpt), "--out", str(ct), "--device", "cpu"])
    assert result.exit_code == 2 and "error:" in result.output and "input" in result.output, result.output
    assert "Traceback" not in result.output and ct.read_bytes() == before
    # --out naming the CT's folder: the prediction goes beside it as ct_seg.nii.gz, the CT stays
    result = runner.invoke(app, ["predict", str(ct), "--checkpoint", str(ckpt), "--out", str(ct.parent),
                                 "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert ct.read_bytes() == before and nib.load(ct.parent / "ct_seg.nii.gz").get_data_dtype() == np.uint8
    assert not list(ct.parent.glob(".*tmp*"))


def test_the_input_folder_as_out_is_refused_for_the_whole_run(tmp_path):
    folder = _cts(tmp_path / "p1", "a.nii.gz", "b.nii")
    with pytest.raises(CtsliceError, match="is the input folder"):
        plan_outputs(folder, folder)
    with pytest.raises(CtsliceError, match="is the input folder"):
        plan_outputs(folder, tmp_path / "p1" / "." / "")


def test_two_inputs_with_one_output_name_are_both_refused_the_others_go_on(tmp_path):
    folder = _cts(tmp_path / "cts", "dup.nii", "dup.nii.gz", "other.nii.gz")
    planned = {f.name: (target, problem) for f, target, problem in plan_outputs(folder, None)}
    assert "dup.nii.gz" in planned["dup.nii"][1] and "dup.nii" in planned["dup.nii.gz"][1]
    assert planned["other.nii.gz"] == (folder / "predictions" / "other_seg.nii.gz", None)


def test_predicting_a_subject_folder_adds_no_subject_to_the_dataset(tiny_dataset):
    before = discover(tiny_dataset)
    sid = before.subjects[0].id
    [(ct, target, problem)] = plan_outputs(tiny_dataset / sid, None)
    assert problem is None and target.name == "ct_seg.nii.gz" and target.parent.parent == tiny_dataset / sid
    save(target, np.zeros((4, 4, 4), np.uint8))  # as if predicted
    after = discover(tiny_dataset)
    assert [s.id for s in after.subjects] == [s.id for s in before.subjects] and not after.problems


def test_output_path_problems_are_one_line_errors(tmp_path, monkeypatch):
    folder = _cts(tmp_path / "p3", "a.nii.gz")
    (tmp_path / "p3_file").write_text("x")
    with pytest.raises(CtsliceError, match="not a folder"):
        plan_outputs(folder, tmp_path / "p3_file")  # a folder of CTs needs a folder
    with pytest.raises(CtsliceError, match="not a folder"):
        plan_outputs(folder / "a.nii.gz", tmp_path / "p3_file" / "x.nii.gz")  # parent is a file
    with pytest.raises(CtsliceError, match="name a folder"):
        plan_outputs(folder, tmp_path / "seg.nii.gz")
    monkeypatch.chdir(folder)
    [(_, target, problem)] = plan_outputs(type(folder)("."), None)  # '.' has no name: no crash
    assert problem is None and target.resolve() == folder / "predictions" / "a_seg.nii.gz"


def test_upper_case_suffixes_are_ct_files(tmp_path):
    folder = _cts(tmp_path / "up", "X.NII.GZ", "y.Nii")
    assert [t.name for _, t, _ in plan_outputs(folder, None)] == ["X_seg.nii.gz", "y_seg.nii.gz"]


def test_a_failed_write_leaves_no_temporary_file_and_the_old_output(tmp_path):
    target = tmp_path / "seg.nii.gz"
    target.write_text("previous")

    def fail(tmp):
        tmp.write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="seg.nii.gz"):
        write_atomic(target, fail, durable=True, suffix=".nii.gz")
    assert target.read_text() == "previous" and sorted(p.name for p in tmp_path.iterdir()) == ["seg.nii.gz"]


def test_a_ct_wider_than_the_models_input_is_predicted_with_a_warning(tiny_cache, tmp_path):
    ckpt = make_checkpoint(tiny_cache, tmp_path / "run" / "ckpt.pth")  # native spacing, 40 px slices
    ct = save(tmp_path / "wide.nii.gz", ct_volume((60, 20, 4)), np.diag([1.0, 1.0, 3.0, 1.0]))
    [outcome] = run_predict(ckpt, ct, None, CFG, LOADER)
    assert outcome.error is None and len(outcome.warnings) == 1, outcome
    warning = outcome.warnings[0]
    assert "wide.nii.gz" in warning and "cropped" in warning and "20 column(s)" in warning and "33.3%" in warning
    seg = np.asarray(nib.load(outcome.output).dataobj)
    assert seg.shape == (60, 20, 4) and not seg[:10].any() and not seg[-10:].any()  # outside: background
    [fits] = run_predict(ckpt, save(tmp_path / "fits.nii.gz", ct_volume((30, 20, 4))), None, CFG, LOADER)
    assert fits.warnings == []


def test_a_ct_with_an_absurd_voxel_size_fails_alone_with_one_line(tiny_cache, tmp_path):
    ckpt = make_checkpoint(tiny_cache, tmp_path / "run" / "ckpt.pth")
    # a model trained at 1.5 mm: every CT is resampled in-plane (a fresh checksum: an edit the test means)
    edit_checkpoint(ckpt, lambda data: data["preprocess"].update(spacing=1.5))
    folder = _cts(tmp_path / "cts", "a.nii.gz", "c.nii.gz")
    save(folder / "b.nii.gz", ct_volume(), np.diag([2e6, 2e6, 3e6, 1]))  # 10^6 times too large (metres as um?)
    result = CliRunner().invoke(app, ["predict", str(folder), "--checkpoint", str(ckpt), "--device", "cpu"])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    [line] = [line for line in result.output.splitlines() if "b.nii.gz" in line and "failed" in line]
    assert "voxel size" in line and "implausible" in line
    assert "1 of 3 file(s) failed" in result.output
    assert sorted(p.name for p in (folder / "predictions").glob("*.nii.gz")) == ["a_seg.nii.gz", "c_seg.nii.gz"]

"""`predict` on NRRD, MetaImage and DICOM series: the output in the input's kind (or --format), on the CT's own
grid, equal voxel for voxel to the prediction of the same CT stored as NIfTI; DICOM SEG read back."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from typer.testing import CliRunner

from checkpoints import make_checkpoint
from clinical_builders import AXIAL, OBLIQUE, assert_same_voxels, write_dicom_series, write_itk
from ctslice.cli import app
from ctslice.config import EvaluateConfig, LoaderConfig
from ctslice.evaluate.predict import run_predict

CFG = EvaluateConfig(device="cpu")
LOADER = LoaderConfig(batch_size=4)
SHAPE = (30, 26, 5)


@pytest.fixture
def ckpt(tiny_cache, tmp_path):
    return make_checkpoint(tiny_cache, tmp_path / "run" / "ckpt.pth")


def hu() -> np.ndarray:
    return np.random.default_rng(0).integers(-1000, 1000, SHAPE).astype(np.int16)


def nifti_prediction(ckpt, tmp_path, affine) -> tuple[np.ndarray, np.ndarray]:
    path = tmp_path / "ref" / "ct.nii.gz"
    path.parent.mkdir()
    nib.save(nib.Nifti1Image(hu(), affine), path)
    [outcome] = run_predict(ckpt, path, tmp_path / "ref" / "out.nii.gz", CFG, LOADER)
    seg = nib.load(outcome.output)
    return np.asarray(seg.dataobj), seg.affine


@pytest.mark.parametrize("suffix, out_suffix", [(".nrrd", ".nrrd"), (".mha", ".mha"), (".mhd", ".mha")])
def test_itk_input_gives_output_of_its_kind_on_its_grid(ckpt, tmp_path, suffix, out_suffix):
    ct = write_itk(tmp_path / "in" / f"patient{suffix}", hu(), OBLIQUE)
    [outcome] = run_predict(ckpt, ct, None, CFG, LOADER)
    assert outcome.error is None and outcome.output == tmp_path / "in" / f"patient_seg{out_suffix}"
    seg, source = sitk.ReadImage(str(outcome.output)), sitk.ReadImage(str(ct))
    assert seg.GetSize() == source.GetSize() and seg.GetPixelID() == sitk.sitkUInt8
    for get in ("GetOrigin", "GetSpacing", "GetDirection"):  # NRRD: the same space origin and directions
        np.testing.assert_allclose(getattr(seg, get)(), getattr(source, get)(), atol=1e-9, err_msg=get)
    expected, affine = nifti_prediction(ckpt, tmp_path, OBLIQUE)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(seg).transpose(2, 1, 0), expected)
    assert (tmp_path / "in" / "patient_seg.labels.json").is_file()


def test_dicom_series_gives_nifti_equal_to_the_niftis_prediction(ckpt, tmp_path):
    write_dicom_series(tmp_path / "series", hu(), OBLIQUE)
    [outcome] = run_predict(ckpt, tmp_path / "series", None, CFG, LOADER)
    assert outcome.error is None and outcome.output == tmp_path / "series_seg.nii.gz"
    seg = nib.load(outcome.output)
    assert seg.header["sform_code"] == 1 and seg.header["qform_code"] == 1  # scanner coordinates
    expected, affine = nifti_prediction(ckpt, tmp_path, OBLIQUE)
    assert_same_voxels(np.asarray(seg.dataobj), seg.affine, expected, affine)


def test_format_option_and_its_conflicts(ckpt, tmp_path):
    path = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(hu(), AXIAL), path)
    [outcome] = run_predict(ckpt, path, None, CFG, LOADER, fmt="nrrd")
    assert outcome.output == tmp_path / "ct_seg.nrrd" and sitk.ReadImage(str(outcome.output)).GetSize() == SHAPE
    runner = CliRunner()
    base = ["predict", str(path), "--checkpoint", str(ckpt), "--device", "cpu"]
    result = runner.invoke(app, [*base, "--format", "dicom-seg"])
    assert result.exit_code == 2 and "needs a DICOM series folder" in result.output
    result = runner.invoke(app, [*base, "--format", "mha", "--out", str(tmp_path / "x.nrrd")])
    assert result.exit_code == 2 and "--format is mha" in result.output
    result = runner.invoke(app, [*base, "--series", "1.2.3"])
    assert result.exit_code == 2 and "is not a DICOM series folder" in result.output
    result = runner.invoke(app, [*base, "--format", "png"])
    assert result.exit_code == 2 and "expected one of nifti, nrrd, mha, dicom-seg" in result.output


def test_a_folder_of_several_series_is_listed_then_one_chosen(ckpt, tmp_path):
    write_dicom_series(tmp_path / "mixed", hu(), AXIAL, series_uid="1.2.3.1", description="abdomen")
    write_dicom_series(tmp_path / "b", hu()[:, :, :3], AXIAL, series_uid="1.2.3.2", description="lung")
    for p in (tmp_path / "b").iterdir():
        p.rename(tmp_path / "mixed" / f"b_{p.name}")
    base = ["predict", str(tmp_path / "mixed"), "--checkpoint", str(ckpt), "--device", "cpu"]
    result = CliRunner().invoke(app, base)
    assert result.exit_code == 1
    assert "1.2.3.1 (abdomen, 5 files)" in result.output and "1.2.3.2 (lung, 3 files)" in result.output
    result = CliRunner().invoke(app, [*base, "--series", "1.2.3.2"])
    assert result.exit_code == 0, result.output
    assert nib.load(tmp_path / "mixed_seg.nii.gz").shape == (30, 26, 3)


def test_dicom_seg_references_the_series_and_reads_back_equal(ckpt, tmp_path):
    import highdicom as hd
    import pydicom

    paths = write_dicom_series(tmp_path / "series", hu(), OBLIQUE)
    [outcome] = run_predict(ckpt, tmp_path / "series", None, CFG, LOADER, fmt="dicom-seg")
    assert outcome.error is None and outcome.output == tmp_path / "series_seg.dcm"
    expected, affine = nifti_prediction(ckpt, tmp_path, OBLIQUE)
    sources = [pydicom.dcmread(p) for p in paths]  # in slice order k = 0, 1, ... (OBLIQUE's k is the normal's)
    seg = hd.seg.segread(outcome.output)
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"  # Segmentation Storage
    series_uids = {s.SeriesInstanceUID for s in sources}
    assert {uid for _, uid, _ in seg.get_source_image_uids()} == series_uids
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID in series_uids
    referenced = {i.ReferencedSOPInstanceUID for i in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert referenced == {s.SOPInstanceUID for s in sources}
    for same in ("StudyInstanceUID", "PatientID", "FrameOfReferenceUID"):
        assert getattr(seg, same) == getattr(sources[0], same), same
    labels = dict(enumerate(__import__("json").loads((tmp_path / "ref" / "out.labels.json").read_text()).values()))
    present = [int(i) for i in np.unique(expected) if i]
    assert present, "the test model predicts no structure: the SEG test needs one"
    numbers = seg.get_segment_numbers()
    assert [seg.get_segment_description(n).segment_label for n in numbers] == [labels[i] for i in present]
    masks = seg.get_pixels_by_source_instance([s.SOPInstanceUID for s in sources], segment_numbers=numbers,
                                              assert_missing_frames_are_empty=True)  # (slice, row, col, segment)
    for n, index in zip(numbers, present):
        np.testing.assert_array_equal(masks[..., n - 1].transpose(2, 1, 0), expected == index, err_msg=labels[index])
    frames = sum(int((expected == i).any(axis=(0, 1)).sum()) for i in present)
    assert seg.NumberOfFrames == frames  # frames only where a structure is present


def test_no_structure_predicted_writes_no_seg(tmp_path):
    from ctslice.errors import CtsliceError
    from ctslice.evaluate.dicom_seg import write_dicom_seg

    write_dicom_series(tmp_path / "series", hu()[:4, :4, :3], AXIAL)
    with pytest.raises(CtsliceError, match="no structure predicted"):
        write_dicom_seg(np.zeros((4, 4, 3), np.uint8), tmp_path / "x.dcm", tmp_path / "series", None,
                        {0: "background", 1: "liver"})
    assert not (tmp_path / "x.dcm").exists()


def test_property_codes():
    from ctslice.evaluate.dicom_seg import property_code

    assert [str(c.value) for c in property_code("liver")] == ["91723000", "10200004"]
    assert property_code("kidney_left")[1].meaning == "Kidney"
    assert property_code("rib_left_3")[1].meaning == "Rib"
    assert [c.meaning for c in property_code("autochthon_left")] == ["Tissue", "Tissue"]

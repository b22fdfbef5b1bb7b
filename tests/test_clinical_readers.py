"""DICOM series, NRRD and MetaImage read back to the HU values and world coordinates of the NIfTI volume they were
written from, voxel by voxel; malformed series give one error line naming the series and the file."""

from __future__ import annotations

import os

import numpy as np
import pytest

from clinical_builders import AXIAL, OBLIQUE, REVERSED, assert_same_voxels, write_dicom_series, write_itk
from ctslice.errors import InputError
from ctslice.imaging import formats, volume

SHAPE = (6, 5, 4)
AFFINES = {"axial": AXIAL, "oblique": OBLIQUE, "reversed": REVERSED}


def hu_volume(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(-1024, 2000, size=SHAPE).astype(np.int16)


def read(path, series=None):
    img = formats.load_image(path, "s1", path.name, series)
    return volume.read_ct(img, "s1", path.name, -32768, 32767), img.affine


@pytest.mark.parametrize("affine", AFFINES.values(), ids=AFFINES.keys())
def test_dicom_series_reads_back_every_voxel_in_place(tmp_path, affine):
    hu = hu_volume()
    write_dicom_series(tmp_path / "series", hu, affine)
    data, read_affine = read(tmp_path / "series")
    assert_same_voxels(data, read_affine, hu, affine)


def test_reverse_slice_order_is_sorted_by_position_not_by_file(tmp_path):
    """Slice k of REVERSED lies below slice k - 1: read back, slices go from feet to head."""
    write_dicom_series(tmp_path / "series", hu_volume(), REVERSED)
    _, read_affine = read(tmp_path / "series")
    flip_k = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, -1, SHAPE[2] - 1], [0, 0, 0, 1.0]])
    np.testing.assert_allclose(read_affine, REVERSED @ flip_k, atol=1e-6)  # k = 0 is now the lowest slice
    assert read_affine[2, 2] > 0


def test_positions_rounded_to_a_hundredth_are_one_spacing(tmp_path):
    """0.625 mm slices whose positions the scanner wrote with 2 decimals: steps of 0.62 and 0.63 mm are one
    spacing, and the slice step is their average (no drift along the stack)."""
    thin = AXIAL @ np.diag([1, 1, 0.3125, 1])  # 2 mm -> 0.625 mm
    hu = np.random.default_rng(1).integers(-1000, 1000, size=(4, 3, 9)).astype(np.int16)
    paths = write_dicom_series(tmp_path / "s", hu, thin)
    for k, p in enumerate(paths):
        x, y, z = (thin @ [0, 0, k, 1])[:3] * [-1, -1, 1]
        edit(p, ImagePositionPatient=[f"{x:.2f}", f"{y:.2f}", f"{z:.2f}"])
    data, affine = read(tmp_path / "s")
    assert_same_voxels(data, affine, hu, thin, tolerance_mm=0.006)


def test_rescale_slope_gives_hounsfield_units(tmp_path):
    hu = (hu_volume() // 2 * 2).astype(np.int16)  # even: exact with slope 2
    write_dicom_series(tmp_path / "series", hu, AXIAL, slope=2.0, intercept=-1000.0)
    data, read_affine = read(tmp_path / "series")
    assert_same_voxels(data, read_affine, hu, AXIAL)


@pytest.mark.parametrize("suffix", [".nrrd", ".seg.nrrd", ".mha", ".mhd"])
@pytest.mark.parametrize("affine", AFFINES.values(), ids=AFFINES.keys())
def test_itk_files_read_back_every_voxel_in_place(tmp_path, suffix, affine):
    hu = hu_volume()
    path = write_itk(tmp_path / f"ct{suffix}", hu, affine)
    data, read_affine = read(path)
    np.testing.assert_allclose(read_affine, affine, atol=1e-9)
    assert_same_voxels(data, read_affine, hu, affine)


def test_nrrd_in_ras_space_keeps_its_world_coordinates(tmp_path):
    """A NRRD written in 'right-anterior-superior' space (hand-written header, raw data): ITK turns it into LPS,
    and the affine read back is the RAS one the header states."""
    hu = hu_volume()
    vectors = " ".join("(" + ",".join(f"{v:.17g}" for v in OBLIQUE[:3, a]) + ")" for a in range(3))
    header = (f"NRRD0004\ntype: short\ndimension: 3\nspace: right-anterior-superior\nsizes: 6 5 4\n"
              f"space directions: {vectors}\nkinds: domain domain domain\nendian: little\nencoding: raw\n"
              f"space origin: ({','.join(f'{v:.17g}' for v in OBLIQUE[:3, 3])})\n\n")
    path = tmp_path / "ras.nrrd"
    path.write_bytes(header.encode() + hu.astype("<i2").tobytes(order="F"))
    data, affine = read(path)
    np.testing.assert_allclose(affine, OBLIQUE, atol=1e-9)
    assert_same_voxels(data, affine, hu, OBLIQUE)


@pytest.mark.parametrize("shape, reason", [((6, 5), "expected a 3D volume"), ((6, 5, 4, 3), "3 values per voxel")],
                         ids=["2d", "vector"])
def test_itk_file_that_is_not_one_3d_scalar_volume(tmp_path, shape, reason):
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.zeros(shape, np.int16), isVector=len(shape) == 4)
    sitk.WriteImage(image, str(tmp_path / "x.mha"))
    with pytest.raises(InputError, match=f"^s1: x.mha: {reason}"):
        formats.load_image(tmp_path / "x.mha", "s1", "x.mha")


def test_header_only_until_the_data_is_asked_for(tmp_path):
    """The checks (memory, geometry) run on the header: a damaged data section fails only at read_data."""
    path = write_itk(tmp_path / "ct.mhd", hu_volume(), AXIAL)
    os.truncate(path.with_suffix(".raw"), 10)
    img = formats.load_image(path, "s1", "ct.mhd")
    assert img.shape == SHAPE
    with pytest.raises(InputError, match="s1: ct.mhd: unreadable or truncated data"):
        volume.read_data(img, np.int16, "s1", "ct.mhd")


def test_volume_load_header_dispatches(tmp_path):
    path = write_itk(tmp_path / "ct.nrrd", hu_volume(), OBLIQUE)
    np.testing.assert_allclose(volume.load_header(path, "s1", "ct.nrrd").affine, OBLIQUE, atol=1e-9)


def test_not_a_volume_file(tmp_path):
    (tmp_path / "ct.nrrd").write_text("garbage")
    with pytest.raises(InputError, match=r"^s1: ct.nrrd: not a readable NRRD file"):
        formats.load_image(tmp_path / "ct.nrrd", "s1", "ct.nrrd")


# --- malformed series: one line naming the series and the file ---

def one_line(error: InputError) -> str:
    text = str(error)
    assert "\n" not in text
    return text


def test_several_series_are_listed_unless_one_is_chosen(tmp_path):
    hu = hu_volume()
    write_dicom_series(tmp_path / "mixed", hu, AXIAL, series_uid="1.2.3.1", description="abdomen")
    write_dicom_series(tmp_path / "other", hu[:, :, :3], OBLIQUE, series_uid="1.2.3.2", description="lung")
    for p in (tmp_path / "other").iterdir():
        p.rename(tmp_path / "mixed" / f"b_{p.name}")
    with pytest.raises(InputError) as e:
        read(tmp_path / "mixed")
    assert "2 series" in one_line(e.value) and "1.2.3.1 (abdomen, 4 files)" in str(e.value)
    assert "1.2.3.2 (lung, 3 files)" in str(e.value)
    data, affine = read(tmp_path / "mixed", series="1.2.3.2")
    assert_same_voxels(data, affine, hu[:, :, :3], OBLIQUE)


def test_missing_slice(tmp_path):
    paths = write_dicom_series(tmp_path / "s", hu_volume(), AXIAL, series_uid="1.2.9")
    paths[2].unlink()
    with pytest.raises(InputError) as e:
        read(tmp_path / "s")
    assert f"s1: s/{paths[3].name}: series 1.2.9 (test series, 3 files): 1 missing slice(s)" in one_line(e.value)


def test_varying_spacing(tmp_path):
    import pydicom

    paths = write_dicom_series(tmp_path / "s", hu_volume(), AXIAL, series_uid="1.2.9")
    position = pydicom.dcmread(paths[3]).ImagePositionPatient
    edit(paths[3], ImagePositionPatient=[position[0], position[1], position[2] + 0.7])
    with pytest.raises(InputError, match=rf"s/{paths[3].name}: series 1.2.9 .*slice spacing varies") as e:
        read(tmp_path / "s")
    one_line(e.value)


def test_gantry_tilt(tmp_path):
    paths = write_dicom_series(tmp_path / "s", hu_volume(), AXIAL, series_uid="1.2.9")
    for k, p in enumerate(paths):  # each slice shifted 1 mm further along y: a tilted stack
        x, y, z = (AXIAL @ [0, 0, k, 1])[:3] * [-1, -1, 1]  # LPS
        edit(p, ImagePositionPatient=[f"{x:g}", f"{y + k:g}", f"{z:g}"])
    with pytest.raises(InputError, match=r"series 1.2.9 .*gantry tilt") as e:
        read(tmp_path / "s")
    assert f"s/{paths[-1].name}" in one_line(e.value)


def edit(path, **tags) -> None:
    import pydicom

    ds = pydicom.dcmread(path)
    for tag, value in tags.items():
        setattr(ds, tag, value)
    ds.save_as(path)


@pytest.mark.parametrize("tags, reason", [
    ({"GantryDetectorTilt": 12}, "gantry tilt of 12 degrees"), ({"NumberOfFrames": 4}, "a multi-frame"),
    ({"Rows": 4}, "slice size or pixel spacing"), ({"ImageOrientationPatient": [0, 1, 0, 1, 0, 0]}, "orientation"),
], ids=["tilt_tag", "multi_frame", "size", "orientation"])
def test_a_tag_that_refuses_the_series(tmp_path, tags, reason):
    paths = write_dicom_series(tmp_path / "s", hu_volume(), AXIAL, series_uid="1.2.9")
    edit(paths[1], **tags)
    with pytest.raises(InputError, match=rf"^s1: s/IM\d+\.dcm: series 1.2.9 \(test series, 4 files\): {reason}") as e:
        read(tmp_path / "s")
    assert paths[1].name in one_line(e.value)  # the file named, or the one it differs from


def test_two_slices_at_one_position(tmp_path):
    import pydicom

    paths = write_dicom_series(tmp_path / "s", hu_volume(), AXIAL, series_uid="1.2.9")
    edit(paths[1], ImagePositionPatient=pydicom.dcmread(paths[2]).ImagePositionPatient)
    with pytest.raises(InputError, match=r"series 1.2.9 .*two slices at one position") as e:
        read(tmp_path / "s")
    one_line(e.value)


def test_not_ct(tmp_path):
    paths = write_dicom_series(tmp_path / "s", hu_volume(), AXIAL, series_uid="1.2.9", modality="MR")
    with pytest.raises(InputError, match=r"series 1.2.9 .*modality MR, not CT") as e:
        read(tmp_path / "s")
    assert one_line(e.value).split(": ")[1] in {f"s/{p.name}" for p in paths}


def test_truncated_file(tmp_path):
    paths = write_dicom_series(tmp_path / "s", hu_volume(), AXIAL, series_uid="1.2.9")
    os.truncate(paths[1], paths[1].stat().st_size - 7)
    with pytest.raises(InputError, match=rf"s1: s/{paths[1].name}: series 1.2.9 .*truncated file") as e:
        read(tmp_path / "s")
    one_line(e.value)


def test_damaged_header(tmp_path):
    paths = write_dicom_series(tmp_path / "s", hu_volume(), AXIAL, series_uid="1.2.9")
    os.truncate(paths[2], 140)
    with pytest.raises(InputError, match=rf"^s1: s/{paths[2].name}: damaged DICOM header") as e:
        read(tmp_path / "s")
    one_line(e.value)


def test_a_dicomdir_index_is_skipped(tmp_path):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    hu = hu_volume()
    write_dicom_series(tmp_path / "s", hu, AXIAL)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4"
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.FileSetID = "EXPORT"
    ds.save_as(tmp_path / "s" / "DICOMDIR", enforce_file_format=True)
    data, affine = read(tmp_path / "s")
    assert_same_voxels(data, affine, hu, AXIAL)


"""The fast NIfTI read (imaging/nifti_read.py) gives nibabel's own arrays, and bad .gz files stay one-line errors."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from builders import AFFINE, box_mask, ct_volume, save
from conftest import require_real_subject
from ctslice.errors import InputError
from ctslice.imaging import volume
from ctslice.imaging.nifti_read import gunzip, read_voxels


def _stock(path):
    return np.asanyarray(nib.load(path).dataobj)


def _assert_same(ours: np.ndarray, stock: np.ndarray) -> None:
    assert ours.dtype == stock.dtype and ours.shape == stock.shape
    assert ours.flags.f_contiguous == stock.flags.f_contiguous
    assert np.array_equal(ours, stock, equal_nan=True)


def _scaled_image(dtype=np.int16) -> nib.Nifti1Image:
    img = nib.Nifti1Image(ct_volume().astype(dtype), AFFINE)
    img.header.set_slope_inter(0.5, -1024.25)  # stored ints, float voxels: nibabel's scaling must apply
    return img


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".NII.GZ"])
@pytest.mark.parametrize("dtype", [np.int16, np.uint8, ">i2"])
def test_scaled_volumes_read_as_nibabel_reads_them(tmp_path, suffix, dtype):
    path = tmp_path / f"ct{suffix}"
    nib.save(_scaled_image(dtype), path)
    ours, stock = read_voxels(nib.load(path).dataobj), _stock(path)
    assert stock.dtype.kind == "f"  # the scaling did apply
    _assert_same(ours, stock)


def test_unscaled_masks_and_nan_slope_read_as_nibabel_reads_them(tmp_path):
    path = save(tmp_path / "mask.nii.gz", box_mask())
    img = nib.load(path)
    img.header["scl_slope"] = np.nan  # TotalSegmentator's files: NaN slope means no scaling
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj), img.affine, img.header), path)
    ours, stock = read_voxels(nib.load(path).dataobj), _stock(path)
    assert stock.dtype == np.uint8
    _assert_same(ours, stock)


def test_a_singleton_fourth_dimension_reads_as_3d(tmp_path):
    path = save(tmp_path / "ct.nii.gz", ct_volume()[..., None])
    img = volume.load_header(path, "s", "ct.nii.gz")
    _assert_same(volume.read_data(img, np.int16, "s", "ct.nii.gz"), _stock(path)[..., 0])


def test_a_multi_member_gzip_file_reads_whole(tmp_path):
    path = save(tmp_path / "ct.nii", ct_volume())
    raw = path.read_bytes()
    half = len(raw) // 2
    gz = tmp_path / "ct.nii.gz"
    gz.write_bytes(gzip.compress(raw[:half]) + gzip.compress(raw[half:]) + b"\0" * 8)  # as bgzip writes them
    assert gunzip(gz.read_bytes(), len(raw)) == raw
    _assert_same(read_voxels(nib.load(gz).dataobj), _stock(path))


def _truncated(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _corrupt(path):
    data = bytearray(path.read_bytes())
    data[-8] ^= 0xFF  # the CRC-32 in the trailer: every byte decodes, the check fails
    path.write_bytes(bytes(data))


def _garbage_member(path):
    path.write_bytes(path.read_bytes() + b"not a gzip member")


def _short_stream(path):  # a complete gzip stream of a .nii cut short
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-100]))


@pytest.mark.parametrize("damage, reason", [(_truncated, "truncated"), (_corrupt, "unreadable"),
                                            (_garbage_member, "unreadable"), (_short_stream, "truncated")])
def test_a_damaged_gz_is_one_line_naming_subject_and_file(tmp_path, damage, reason):
    path = save(tmp_path / "liver.nii.gz", ct_volume(shape=(40, 40, 20)))
    img = volume.load_header(path, "s1", "segmentations/liver.nii.gz")
    damage(path)
    with pytest.raises(InputError) as e:
        volume.read_data(img, np.int16, "s1", "segmentations/liver.nii.gz")
    message = str(e.value)
    assert message.startswith("s1: segmentations/liver.nii.gz: ") and reason in message and "\n" not in message


def test_the_real_subject_reads_as_nibabel_reads_it():
    root = require_real_subject() / "s0001"
    for path in [root / "ct.nii.gz", *sorted((root / "segmentations").glob("*.nii.gz"))[:20]]:
        _assert_same(read_voxels(nib.load(path).dataobj), _stock(path))


def test_content_beyond_the_declared_voxels_is_not_decompressed(tmp_path):
    path = save(tmp_path / "mask.nii", box_mask())
    raw = path.read_bytes()
    bomb = tmp_path / "mask.nii.gz"
    bomb.write_bytes(gzip.compress(raw + bytes(50_000_000), compresslevel=1))  # 50 MB of zeros after the voxels
    assert len(gunzip(bomb.read_bytes(), len(raw))) == len(raw) + 1
    _assert_same(read_voxels(nib.load(bomb).dataobj), _stock(path))


def _ordinary_mask_read(path, ct, name="segmentations/liver.nii.gz"):
    """What read_mask replaces: load_header, check_same_grid, read_data (or the error they raise)."""
    try:
        img = volume.load_header(path, "s1", name)
        volume.check_same_grid(ct, img, "s1", name)
        return volume.read_data(img, np.uint8, "s1", name)
    except InputError as e:
        return str(e)


def _read_mask(path, ct, name="segmentations/liver.nii.gz"):
    try:
        return volume.read_mask(path, ct, "s1", name)
    except InputError as e:
        return str(e)


def _big_endian(path, data):
    img = nib.Nifti1Image(data.astype(">u1"), AFFINE)
    nib.save(nib.Nifti1Image.from_bytes(img.to_bytes()), path)


def _float_mask(path, data):
    save(path, data.astype(np.float32))


def _scaled_mask(path, data):
    img = nib.Nifti1Image(data.astype(np.int16), AFFINE)
    img.header.set_slope_inter(1.0, 0.0)
    nib.save(img, path)


def _nan_mask(path, data):
    f = data.astype(np.float32)
    f[0, 0, 0] = np.nan
    save(path, f)


MASK_FILES = {
    "uint8": lambda p, m: save(p, m),
    "big endian": _big_endian,
    "float32": _float_mask,
    "scaled int16": _scaled_mask,
    "singleton 4th axis": lambda p, m: save(p, m[..., None]),
    "plain .nii": lambda p, m: save(p.with_name("liver.nii"), m),
    "other shape": lambda p, m: save(p, m[:-1]),
    "other grid": lambda p, m: save(p, m, np.diag([2.0, 2.0, 3.5, 1.0])),
    "NaN voxel": _nan_mask,
    "truncated": lambda p, m: (save(p, m), _truncated(p)),
    "corrupt": lambda p, m: (save(p, m), _corrupt(p)),
    "not NIfTI": lambda p, m: p.write_bytes(gzip.compress(b"hello" * 100)),
    "folder": lambda p, m: p.mkdir(),
}


@pytest.mark.parametrize("case", MASK_FILES)
def test_a_mask_reads_as_the_ordinary_read_gives_it_or_fails_the_same_way(tmp_path, case):
    ct = nib.load(save(tmp_path / "ct.nii.gz", ct_volume()))
    path = tmp_path / "liver.nii.gz"
    MASK_FILES[case](path, box_mask())
    if not path.exists():
        path = path.with_name("liver.nii")
    ours, ordinary = _read_mask(path, ct), _ordinary_mask_read(path, ct)
    if isinstance(ordinary, str):
        assert ours == ordinary
    else:
        _assert_same(ours, ordinary)


def test_the_real_subjects_masks_read_as_the_ordinary_read_gives_them():
    root = require_real_subject() / "s0001"
    ct = nib.load(root / "ct.nii.gz")
    for path in sorted((root / "segmentations").glob("*.nii.gz")):
        _assert_same(_read_mask(path, ct), _ordinary_mask_read(path, ct))


@pytest.mark.parametrize("case", ["uint8", "big endian", "float32", "scaled int16"])
def test_a_plain_mask_is_read_without_an_image_object(tmp_path, monkeypatch, case):
    ct = nib.load(save(tmp_path / "ct.nii.gz", ct_volume()))
    path = tmp_path / "liver.nii.gz"
    MASK_FILES[case](path, box_mask())
    expected = _ordinary_mask_read(path, ct)
    monkeypatch.setattr(volume, "load_header", lambda *a: pytest.fail("took the ordinary path"))
    _assert_same(volume.read_mask(path, ct, "s1", "liver.nii.gz"), expected)

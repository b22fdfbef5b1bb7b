"""Dataset discovery: both layouts, meta.csv, and the per-subject problems found before any decoding."""

import pytest

from builders import box_mask, nnunet_dataset, save, ts_subject, ct_volume
from ctslice.errors import CtsliceError
from ctslice.preprocess.sources import discover


def test_totalsegmentator_layout(tmp_path):
    ts_subject(tmp_path, "s01")
    ts_subject(tmp_path, "s02", masks={"liver": box_mask()})  # spleen file missing here
    ds = discover(tmp_path)
    assert ds.layout == "totalsegmentator"
    assert [s.id for s in ds.subjects] == ["s01", "s02"]
    # official relative order (spleen=1, liver=5 officially), renumbered contiguously
    assert ds.label_map == {0: "background", 1: "spleen", 2: "liver"}
    assert dict(ds.subjects[1].masks) == {"liver": "s02/segmentations/liver.nii.gz"}
    assert ds.subjects[0].image == "s01/ct.nii.gz"


def test_meta_csv_split_with_byte_order_mark(tmp_path):
    for sid in ("s01", "s02", "s03"):
        ts_subject(tmp_path, sid)
    (tmp_path / "meta.csv").write_bytes("\ufeffimage_id;age;split\ns01;50;train\ns02;60;test\ns03;70;\n"
                                        .encode("utf-8"))
    ds = discover(tmp_path)
    assert ds.official_split == {"s01": "train", "s02": "test"}
    assert any("1 row" in w for w in ds.warnings)


def test_utf16_meta_csv_is_read(tmp_path):
    ts_subject(tmp_path, "s01")
    (tmp_path / "meta.csv").write_text("image_id;split\ns01;test\n", encoding="utf-16")
    assert discover(tmp_path).official_split == {"s01": "test"}


@pytest.mark.parametrize("content, message", [
    ("image_id,split\ns01,test\n".encode(), "image_id and split"),  # comma-separated
    (b"image_id;split\ns01;t\xe9st\n", "cannot read"),  # Latin-1, not UTF-8
    (b"image_id;split\ns01;testing\n", "other than train/val/test"),
])
def test_meta_csv_that_cannot_be_read_whole_is_an_error(tmp_path, content, message):
    ts_subject(tmp_path, "s01")
    (tmp_path / "meta.csv").write_bytes(content)
    with pytest.raises(CtsliceError, match=message):
        discover(tmp_path)


def test_nnunet_layout_v2_and_msd_labels(tmp_path):
    label = box_mask() * 3
    nnunet_dataset(tmp_path / "v2", {"case_001": label}, {"background": 0, "liver": 3, "tumour": 1})
    ds = discover(tmp_path / "v2")
    assert ds.layout == "nnunet"
    assert ds.label_map == {0: "background", 1: "tumour", 2: "liver"}
    assert ds.label_values == {0: 0, 1: 1, 3: 2}
    assert ds.subjects[0].label == "labelsTr/case_001.nii.gz"
    nnunet_dataset(tmp_path / "msd", {"liver_7": label}, {"0": "background", "1": "liver"})
    assert discover(tmp_path / "msd").label_map == {0: "background", 1: "liver"}


def test_empty_or_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(CtsliceError, match="no subjects found"):
        discover(tmp_path)
    with pytest.raises(CtsliceError, match="does not exist"):
        discover(tmp_path / "nope")


def test_subject_problems_are_named_and_the_rest_goes_on(tmp_path):
    ts_subject(tmp_path, "good")
    (tmp_path / "no_ct" / "segmentations").mkdir(parents=True)
    ts_subject(tmp_path, "bad name")
    ts_subject(tmp_path, "Case1")
    ts_subject(tmp_path, "case1")
    ds = discover(tmp_path)
    assert [s.id for s in ds.subjects] == ["good"]
    problems = {p.subject: str(p) for p in ds.problems}
    assert "no CT" in problems["no_ct"] and "no_ct/ct.nii.gz" in problems["no_ct"]
    assert "safe folder name" in problems["bad name"]
    assert "duplicate subject id" in problems["Case1"] and "duplicate subject id" in problems["case1"]


def test_nnunet_duplicates_and_missing_labels(tmp_path):
    nnunet_dataset(tmp_path, {"a_1": box_mask(), "b_1": box_mask()}, {"background": 0, "x": 1})
    save(tmp_path / "imagesTr" / "a_1_0000.nii", ct_volume())  # same case as .nii and .nii.gz
    (tmp_path / "labelsTr" / "b_1.nii.gz").unlink()
    ds = discover(tmp_path)
    problems = {p.subject: str(p) for p in ds.problems}
    assert not ds.subjects
    assert "duplicate subject id" in problems["a_1"]
    assert "no label file" in problems["b_1"]


def test_a_subject_without_any_mask_file_fails_and_a_dataset_without_any_is_an_error(tmp_path):
    ts_subject(tmp_path, "s01")
    ts_subject(tmp_path, "s01_seg", masks={})  # e.g. a prediction folder written into the dataset
    ds = discover(tmp_path)
    assert [s.id for s in ds.subjects] == ["s01"]
    assert str(ds.problems[0]).startswith("s01_seg: s01_seg/segmentations/: no mask file")
    ts_subject(tmp_path / "none", "s01", masks={})
    with pytest.raises(CtsliceError, match="no subject has any mask"):
        discover(tmp_path / "none")


def test_linked_subject_folders_files_and_mask_folders_are_followed(tmp_path):
    """Datasets are often linked in: the listing follows links to folders and files, as Path.is_file did, and a
    link to nothing is no CT."""
    elsewhere = tmp_path / "elsewhere"
    ts_subject(elsewhere, "s01")
    ts_subject(elsewhere, "s02")
    data = tmp_path / "data"
    data.mkdir()
    (data / "s01").symlink_to(elsewhere / "s01")  # a linked subject folder
    (data / "s02").mkdir()
    (data / "s02" / "ct.nii.gz").symlink_to(elsewhere / "s02" / "ct.nii.gz")  # a linked CT
    (data / "s02" / "segmentations").symlink_to(elsewhere / "s02" / "segmentations")  # a linked mask folder
    (data / "s03" / "segmentations").mkdir(parents=True)
    (data / "s03" / "ct.nii.gz").symlink_to(tmp_path / "nothing.nii.gz")
    (data / ".hidden").mkdir()
    ds = discover(data)
    assert [s.id for s in ds.subjects] == ["s01", "s02"]
    assert ds.subjects[1].image == "s02/ct.nii.gz" and dict(ds.subjects[1].masks)["spleen"] == \
        "s02/segmentations/spleen.nii.gz"
    assert "no CT" in str(ds.problems[0]) and ds.problems[0].subject == "s03"
    assert any("1 hidden folder(s) skipped" in w and ".hidden" in w for w in ds.warnings)

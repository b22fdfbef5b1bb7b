"""meta.csv, the official split (issue 15): a quote left open or an id given two splits is an error naming meta.csv
and the line (it moved a test subject into train); a FIFO or device in its place is refused, never read; ids that
match no subject folder are named in a warning."""

import os

import pytest
from typer.testing import CliRunner

from builders import ts_subject
from ctslice.cache.manifest import read_manifest
from ctslice.cli import app
from ctslice.errors import CtsliceError
from ctslice.preprocess.sources import discover
from test_hostile_files import no_hang  # noqa: F401  (the fixture: a test that would hang fails instead)


@pytest.fixture
def three(tmp_path):
    for sid in ("s01", "s02", "s03"):
        ts_subject(tmp_path, sid)
    return tmp_path


@pytest.mark.parametrize("text, named", [
    ('image_id;split\ns01;train\n"s02;test\ns03;val\n', "line 3: bad quoting"),  # open to the end of the file
    ('image_id;split\ns01;train\n"s02;test\ns03";val\n', "line 3: a quoted field runs on to line 4"),  # swallows s03
    ('image_id;split\n"s01"x;test\n', "line 2: bad quoting"),
])
def test_a_quote_left_open_is_an_error_naming_the_line(three, text, named):
    (three / "meta.csv").write_text(text)
    with pytest.raises(CtsliceError, match="meta.csv") as caught:
        discover(three)
    assert named in str(caught.value)


def test_an_id_with_two_splits_is_an_error_naming_both_lines(three):
    (three / "meta.csv").write_text("image_id;split\ns01;train\ns02;test\ns01;train\ns02;train\n")
    with pytest.raises(CtsliceError, match="meta.csv: s02 has two splits, test on line 3 and train on line 5"):
        discover(three)
    (three / "meta.csv").write_text("image_id;split\ns01;train\ns02;test\ns02;test\n")  # the same twice: fine
    assert discover(three).official_split == {"s01": "train", "s02": "test"}


@pytest.mark.parametrize("kind", ["fifo", "dev_zero", "dangling"])
def test_a_meta_csv_that_is_no_regular_file_is_refused_never_read(three, no_hang, kind):  # noqa: F811
    meta = three / "meta.csv"
    if kind == "fifo":
        os.mkfifo(meta)  # reading it would wait for a writer forever
    elif kind == "dev_zero":
        meta.symlink_to("/dev/zero")  # reading it would never end
    else:
        meta.symlink_to(three / "gone.csv")
    with pytest.raises(CtsliceError, match="meta.csv: (not a regular file|cannot read it)"):
        discover(three)


def test_ids_matching_no_subject_are_named_with_a_count(three):
    rows = "".join(f"x{i:02d};test\n" for i in range(7))
    (three / "meta.csv").write_text(f"image_id;split\ns01;test\n{rows}")
    ds = discover(three)
    assert ds.official_split["s01"] == "test"
    assert ("meta.csv: 7 id(s) match no subject folder (their split is not used): x00, x01, x02, x03, x04 and 2 more"
            in ds.warnings)
    (three / "meta.csv").write_text("image_id;split\ns01;test\n")
    assert not [w for w in discover(three).warnings if "match no subject" in w]


def test_preprocess_stops_in_one_line_and_no_subject_changes_split(tiny_dataset, tiny_cache):
    before = read_manifest(tiny_cache).split_of()
    held_out = next(sid for sid, split in before.items() if split != "train")
    meta = tiny_dataset / "meta.csv"  # image_id;age;gender;split
    meta.write_text(meta.read_text(encoding="utf-8-sig") + f"{held_out};50;f;train\n")  # a second, different row
    result = CliRunner().invoke(app, ["preprocess", str(tiny_dataset), "--cache", str(tiny_cache), "--workers", "0"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "meta.csv" in lines[0] and f"{held_out} has two splits" in lines[0], lines
    assert read_manifest(tiny_cache).split_of() == before

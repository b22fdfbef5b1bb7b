"""`ctslice bench safety` with tiny counts prints its counts table (one row per family and a total, every attack
survived), and the rules it counts by: a traceback, a hang or a lost file is never survived, and "refused in one
line" means exit 2 with exactly one `error:` line."""

import re

from typer.testing import CliRunner

from ctslice.bench.attack import Ran, Tally, lost, snapshot, total
from ctslice.cli import app

ROW = re.compile(r"^(?P<family>[a-z/ -]+?)\s+(?P<tried>\d+)\s+(?P<survived>\d+)\s+(?P<tracebacks>\d+)\s+"
                 r"(?P<hangs>\d+)\s+(?P<lost>\d+)$")


def test_the_bench_with_tiny_counts_prints_the_counts_table(tmp_path):
    result = CliRunner().invoke(app, ["bench", "safety", "--only", "write-paths,flips,corruptions",
                                      "--write-paths", "3", "--flips", "6", "--corruptions", "3",
                                      "--workdir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["family", "tried", "survived", "tracebacks", "hangs", "files", "lost"]
    rows = {m["family"]: m for m in map(ROW.match, lines[1:]) if m}
    assert list(rows) == ["cache corruptions", "write paths", "checkpoint bit flips", "total"], result.output
    for family, tried in [("cache corruptions", 3), ("write paths", 3), ("checkpoint bit flips", 6), ("total", 12)]:
        row = rows[family]
        assert int(row["tried"]) == int(row["survived"]) == tried, result.output
        assert row["tracebacks"] == row["hangs"] == row["lost"] == "0"
    assert "checkpoint bit flips: " in result.output and "refused" in result.output
    assert not (tmp_path / "safety").exists()  # its datasets, caches and runs are removed


def test_an_unknown_family_is_one_error_line(tmp_path):
    result = CliRunner().invoke(app, ["bench", "safety", "--only", "flips,nope", "--workdir", str(tmp_path)])
    assert result.exit_code == 2 and "unknown families nope" in result.output
    assert not (tmp_path / "safety").exists()


def test_a_traceback_a_hang_or_a_lost_file_is_never_survived():
    tally = Tally("t")
    tally.add(True)
    tally.add(True, Ran(2, "", "error: x\nTraceback (most recent call last):\n"))
    tally.add(True, Ran(None, "", ""))
    tally.add(True, lost=2)
    assert (tally.tried, tally.survived, tally.tracebacks, tally.hangs, tally.files_lost) == (4, 1, 1, 1, 2)
    assert len(tally.failures) == 3 and not tally.ok and "hung" in tally.failures[1]
    whole = total([tally, tally])
    assert (whole.tried, whole.survived, whole.files_lost) == (8, 2, 4)


def test_refused_in_one_line_means_exit_2_and_one_error_line():
    assert Ran(2, "", "predict ━━ 0/?\nerror: data is a dataset folder\n").refused_in_one_line()
    assert not Ran(1, "", "error: x\n").refused_in_one_line()
    assert not Ran(2, "", "error: x\nerror: y\n").refused_in_one_line()
    assert not Ran(2, "", "no error line\n").refused_in_one_line()
    assert not Ran(2, "", "Traceback (most recent call last):\nerror: x\n").refused_in_one_line()


def test_snapshots_see_changed_and_deleted_files_but_not_locks_or_leases(tmp_path):
    for rel in ("a.txt", "sub/b.txt", ".lock", ".readers/v.json"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    before = snapshot(tmp_path)
    assert sorted(before) == [str(tmp_path / "a.txt"), str(tmp_path / "sub" / "b.txt")]
    (tmp_path / ".lock").write_text("pid")
    (tmp_path / ".readers" / "v.json").unlink()
    assert lost(before, snapshot(tmp_path)) == []
    (tmp_path / "a.txt").write_text("y")
    (tmp_path / "sub" / "b.txt").unlink()
    assert sorted(lost(before, snapshot(tmp_path))) == sorted(before)

"""Names read from files are untrusted (issue 14, 15): ids and structure names become part of a path only through
the one check `cache.names.check_name`, in a dataset, a tampered manifest (checksum recomputed, so the id check is
what refuses) and a tampered checkpoint; and names from disk are printed escaped, never as terminal sequences or
rich markup."""

import json

import pytest
from typer.testing import CliRunner

from builders import ct_volume, save, ts_subject
from checkpoints import edit_checkpoint, make_checkpoint
from ctslice.cache.manifest import canonical_checksum, read_manifest, write_manifest
from ctslice.cache.names import check_name
from ctslice.cli import app
from ctslice.errors import CacheError, CtsliceError
from ctslice.preprocess.sources import discover

BAD = {"slash": "a/b", "dots": "a/../../x", "dotdot": "..", "nul": "a\x00b", "newline": "s1\n",
       "long": "a" * 300}


def _run(*args):
    result = CliRunner().invoke(app, [*map(str, args)])
    assert "Traceback" not in result.output and result.exception is None or isinstance(result.exception, SystemExit), \
        result.output
    return result


@pytest.mark.parametrize("name", BAD.values(), ids=BAD)
def test_the_one_check_refuses_each_unsafe_name(name):
    with pytest.raises(CtsliceError, match="not a safe file name"):
        check_name(name, "subject id")
    assert check_name("s0001_a.b-c", "subject id") == "s0001_a.b-c"


def _tamper_id(cache, bad):
    """Rename the first subject to `bad` in the manifest's table and give the manifest a correct checksum (the
    writer itself refuses to write such a record: write_record checks the id)."""
    path = cache / "manifest.json"
    data = json.loads(path.read_text())
    old = next(iter(data["subjects"]))
    data["subjects"] = {bad: data["subjects"].pop(old), **data["subjects"]}
    data["splits"] = {k: [bad if s == old else s for s in ids] for k, ids in data["splits"].items()}
    data["checksum"] = canonical_checksum(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("name", BAD.values(), ids=BAD)
def test_a_tampered_manifest_id_is_refused_by_evaluate_show_and_stats(tiny_cache, tmp_path, name):
    ckpt = make_checkpoint(tiny_cache, tmp_path / "run" / "ckpt.pth")
    _tamper_id(tiny_cache, name)
    with pytest.raises(CacheError, match="not a safe file name"):
        read_manifest(tiny_cache)
    out = tmp_path / "deep" / "er" / "eval"
    for args in (["evaluate", "--checkpoint", ckpt, "--cache", tiny_cache, "--split", "train", "--out", out,
                  "--save-predictions", "--device", "cpu", "--workers", "0"],
                 ["cache", "show", tiny_cache, name], ["cache", "stats", tiny_cache, "--out", tmp_path / "st"]):
        result = _run(*args)
        assert result.exit_code == 2 and "not a safe file name" in result.output, (args, result.output)
    assert not out.exists() and not (tmp_path / "x.nii.gz").exists() and not (tmp_path / "st").exists()


def _tamper_label(ckpt, name):
    # with a fresh checksum: what refuses the name must be the name check, not the checksum
    edit_checkpoint(ckpt, lambda data: data["label_map"].update({"1": name}))


@pytest.mark.parametrize("name", BAD.values(), ids=BAD)
def test_a_tampered_checkpoint_structure_name_writes_no_mask_anywhere(tiny_cache, tmp_path, name):
    ckpt = make_checkpoint(tiny_cache, tmp_path / "run" / "ckpt.pth")
    _tamper_label(ckpt, name)
    ct = save(tmp_path / "in" / "x.nii.gz", ct_volume((20, 20, 6)))
    out = tmp_path / "a" / "b" / "out"
    before = sorted(tmp_path.rglob("*"))
    result = _run("predict", ct, "--checkpoint", ckpt, "--out", out, "--split-masks", "--device", "cpu")
    assert result.exit_code == 2 and "structure name" in result.output, result.output
    assert sorted(tmp_path.rglob("*")) == before
    if "\x00" in name or "\n" in name:  # even without --split-masks: a name written into the sidecars' lines
        result = _run("predict", ct, "--checkpoint", ckpt, "--out", out, "--device", "cpu")
        assert result.exit_code == 2 and "control characters" in result.output, result.output


def test_a_tampered_manifest_structure_name_saves_no_split_mask(tiny_cache, tmp_path):
    m = read_manifest(tiny_cache)
    m.label_map["1"] = "../../escaped"
    write_manifest(tiny_cache, m)
    ckpt = make_checkpoint(tiny_cache, tmp_path / "run" / "ckpt.pth")  # a checkpoint of the same label map
    result = _run("evaluate", "--checkpoint", ckpt, "--split", "train", "--save-predictions", "--split-masks",
                  "--device", "cpu", "--workers", "0")
    assert result.exit_code == 2 and "structure name" in result.output, result.output
    assert not list(tmp_path.rglob("escaped*")) and not (tmp_path / "run" / "eval-train" / "predictions").exists()


def test_dataset_folders_with_unsafe_names_fail_alone(tmp_path):
    ts_subject(tmp_path / "d", "good")
    for name in ("s1\n", "a" * 200, "x\x1b[31m"):
        ts_subject(tmp_path / "d", name)
    dataset = discover(tmp_path / "d")
    assert [s.id for s in dataset.subjects] == ["good"] and len(dataset.problems) == 3
    assert all("not a safe folder name" in str(p) for p in dataset.problems)


def test_names_from_disk_are_printed_escaped_not_as_terminal_sequences_or_markup(tmp_path):
    data = tmp_path / "d"
    ts_subject(data, "good")
    ts_subject(data, "evil\x1b[2J\x1b[31mred")
    ts_subject(data, "[blink]markup")
    result = _run("preprocess", data, "--cache", tmp_path / "c", "--workers", "0", "--size", "16")
    assert result.exit_code == 1, result.output
    assert "\x1b" not in result.output and "evil\\x1b[2J\\x1b[31mred" in result.output, result.output
    assert "[blink]markup" in result.output
    folder = tmp_path / "cts"
    save(folder / "a\x1b]0;title\x07.nii.gz", ct_volume((20, 20, 6)))
    ckpt = make_checkpoint(tmp_path / "c", tmp_path / "run" / "ckpt.pth")
    result = _run("predict", folder, "--checkpoint", ckpt, "--device", "cpu")
    assert result.exit_code == 0 and "\x1b" not in result.output and "\\x1b]0;title\\x07" in result.output, \
        result.output

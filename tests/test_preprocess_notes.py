"""What an update of an existing cache says before it starts: it must agree with what the run then does."""

import shutil

from typer.testing import CliRunner

from ctslice.cli import app


def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args] + ["--workers", "0"])


def test_a_rebuild_back_to_earlier_settings_says_that_it_reuses_their_folders(tiny_dataset, tiny_cache):
    first = cli("preprocess", tiny_dataset, "--cache", tiny_cache, "--size", "36")
    assert "full rebuild of 5 subject(s): settings changed: size 40 -> 36\n" in first.output
    assert "5 processed, 0 reused" in first.output
    back = cli("preprocess", tiny_dataset, "--cache", tiny_cache, "--size", "40")
    assert "size 36 -> 40 (5 of them still on disk from an earlier build" in back.output
    assert "0 processed, 5 reused" in back.output


def test_split_settings_note_only_when_a_subject_lacks_an_official_split_and_no_blank_line(tiny_dataset, tiny_cache):
    run = cli("preprocess", tiny_dataset, "--cache", tiny_cache, "--val-fraction", "0.5")  # meta.csv splits all
    assert run.exit_code == 0 and "split settings changed" not in run.output and "\n\n" not in run.output
    (tiny_dataset / "meta.csv").unlink()
    run = cli("preprocess", tiny_dataset, "--cache", tiny_cache, "--val-fraction", "0.4")
    assert "split settings changed: val_fraction 0.5 -> 0.4: subjects without an official split" in run.output


def test_another_dataset_folder_is_named(tiny_dataset, tiny_cache, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(tiny_dataset, moved)
    run = cli("preprocess", moved, "--cache", tiny_cache)
    assert run.exit_code == 0 and f"dataset folder changed: {tiny_dataset.resolve()} -> {moved.resolve()}" in run.output
    assert "5 unchanged" in run.output

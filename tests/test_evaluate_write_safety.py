"""Where `evaluate` writes and how it ends: never into the cache or the dataset (refused as `train --out` is),
a stop signal finishes the subject at hand and says what is left, a full disk is one line naming the file, and
`--save-predictions` in cache space saves the arrays it scored (the scores can be recomputed from the files)."""

import pytest
from typer.testing import CliRunner

from checkpoints import make_checkpoint
from ctslice.cli import app
from ctslice.config import EvaluateConfig
from ctslice.errors import CtsliceError
from ctslice.evaluate.run import run_evaluation
from ctslice.preprocess.sources import discover

CFG = EvaluateConfig(workers=0, batch_size=8, device="cpu", worst_subjects=1)


@pytest.mark.parametrize("where", ["cache", "inside the cache", "dataset root", "a dataset subject"])
def test_out_in_the_cache_or_the_dataset_is_refused_before_anything_is_written(tiny_cache, tiny_dataset, tmp_path,
                                                                                where):
    ckpt = make_checkpoint(tiny_cache, tmp_path / "run" / "checkpoint_best.pth")
    sid = discover(tiny_dataset).subjects[0].id
    out = {"cache": tiny_cache, "inside the cache": tiny_cache / "subjects" / "eval", "dataset root": tiny_dataset,
           "a dataset subject": tiny_dataset / sid}[where]
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    ids = [s.id for s in discover(tiny_dataset).subjects]
    result = CliRunner().invoke(app, ["evaluate", "--checkpoint", str(ckpt), "--split", "train", "--out", str(out),
                                      "--save-predictions", "--device", "cpu", "--workers", "0"])
    assert result.exit_code == 2 and "error:" in result.output and "choose another --out" in result.output, \
        result.output
    assert "Traceback" not in result.output
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing written anywhere
    assert [s.id for s in discover(tiny_dataset).subjects] == ids
    assert not discover(tiny_dataset).problems


def test_the_shared_check_is_the_one_train_uses(tiny_cache, tmp_path):
    from ctslice.cache.manifest import read_manifest
    from ctslice.train.rundir import check_run_folder

    with pytest.raises(CtsliceError, match="the run folder and the cache"):
        check_run_folder(tiny_cache / "x", tiny_cache, read_manifest(tiny_cache))
    with pytest.raises(CtsliceError, match="the evaluation folder and the cache"):
        run_evaluation(make_checkpoint(tiny_cache, tmp_path / "r" / "c.pth"), CFG, split="train",
                       out=tiny_cache / "x")

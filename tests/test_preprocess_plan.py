"""The plan step alone: update and repair produce one Plan type, and planning writes nothing."""

from ctslice.cache.manifest import read_manifest
from ctslice.config import PreprocessConfig
from ctslice.preprocess.plan import Plan, plan_repair, plan_update
from ctslice.preprocess.sources import discover

IDS = [f"demo{i:04d}" for i in range(5)]


def _snapshot(cache):
    return sorted((str(p), p.stat().st_mtime_ns) for p in cache.rglob("*") if p.is_file())


def test_update_and_repair_plans_say_what_to_do_and_write_nothing(tiny_dataset, tiny_cache):
    cache, dataset = tiny_cache.resolve(), discover(tiny_dataset.resolve())
    manifest = read_manifest(cache)
    cfg = manifest.settings.config(PreprocessConfig(workers=0))
    before = _snapshot(cache)

    update = plan_update(cache, dataset, cfg)
    assert isinstance(update, Plan) and update.todo == set() and sorted(update.keep) == IDS
    assert update.rebuilt_all is None and update.splits is None and update.job_hash == manifest.settings.hash
    assert update.manifest.settings == manifest.settings and update.notes == []

    forced = plan_update(cache, dataset, cfg, force=True)
    assert forced.todo == set(IDS) and forced.keep == {} and forced.rebuilt_all == "--force"
    assert forced.job_hash.startswith(manifest.settings.hash + "+force-")  # salted: computed again, new folders

    repair = plan_repair(cache, dataset, cfg, ["demo0002", "not-cached"])
    assert isinstance(repair, Plan) and repair.todo == {"demo0002"} and sorted(repair.keep) == IDS[:2] + IDS[3:]
    assert repair.splits == manifest.splits and repair.manifest.settings == manifest.settings
    assert repair.removed == [] and repair.job_hash != manifest.settings.hash
    assert _snapshot(cache) == before

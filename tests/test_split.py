"""Subject-level splits: deterministic, stable when subjects are added, official split first."""

from ctslice.preprocess.split import assign_splits, splits_to_lists


def ids(n, start=0):
    return [f"s{i:04d}" for i in range(start, start + n)]


def test_deterministic_for_a_seed_and_different_across_seeds():
    a = assign_splits(ids(200), seed=1, val_fraction=0.2)
    assert a == assign_splits(list(reversed(ids(200))), seed=1, val_fraction=0.2)
    assert a != assign_splits(ids(200), seed=2, val_fraction=0.2)
    share = sum(v == "val" for v in a.values()) / 200
    assert 0.12 < share < 0.28


def test_adding_subjects_never_moves_existing_ones():
    before = assign_splits(ids(100), seed=0, val_fraction=0.2)
    after = assign_splits(ids(150), seed=0, val_fraction=0.2)
    assert {k: after[k] for k in before} == before


def test_official_then_previous_then_rule():
    got = assign_splits(["a", "b", "c"], 0, 0.2, official={"a": "test"}, previous={"a": "train", "b": "val"})
    assert got["a"] == "test" and got["b"] == "val"


def test_tiny_dataset_still_gets_a_val_subject():
    got = assign_splits(["x", "y"], seed=0, val_fraction=0.2)
    assert sorted(got.values()) == ["train", "val"]
    assert set(assign_splits(["x", "y"], seed=0, val_fraction=0.0).values()) == {"train"}


def test_lists_are_disjoint_and_sorted():
    lists = splits_to_lists(assign_splits(ids(30), 0, 0.3, official={"s0003": "test"}))
    assert set(lists) == {"train", "val", "test"} and lists["test"] == ["s0003"]
    assert sum(len(v) for v in lists.values()) == 30
    assert all(v == sorted(v) for v in lists.values())

"""summary.json in nnU-Net v2's layout: equal to nnU-Net's own computation on the same arrays, on a case where its
conventions and ctslice's differ (a mask file missing in one subject, a structure in no case)."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np

from checkpoints import make_checkpoint
from ctslice.config import EvaluateConfig, LoaderConfig
from ctslice.evaluate.metrics import score_subject
from ctslice.evaluate.nnunet_summary import build_summary, case_counts, summary_keys
from ctslice.evaluate.report import aggregate
from ctslice.evaluate.run import run_evaluation


def nnunet_reference(cases: list[tuple[np.ndarray, np.ndarray]], labels: list[int]) -> dict:
    """What nnunetv2.evaluation.evaluate_predictions computes (compute_tp_fp_fn_tn, compute_metrics,
    compute_metrics_on_folder), restated on arrays: nnU-Net is not a dependency."""
    per_case = []
    for ref, pred in cases:
        metrics = {}
        for r in labels:
            mr, mp = ref == r, pred == r
            tp, fp = int(np.sum(mr & mp)), int(np.sum(~mr & mp))
            fn, tn = int(np.sum(mr & ~mp)), int(np.sum(~mr & ~mp))
            metrics[str(r)] = {"Dice": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else math.nan,
                               "IoU": tp / (tp + fp + fn) if tp + fp + fn else math.nan,
                               "FP": fp, "TP": tp, "FN": fn, "TN": tn, "n_pred": fp + tp, "n_ref": fn + tp}
        per_case.append(metrics)
    names = list(per_case[0][str(labels[0])])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # nanmean of all-NaN, as nnU-Net lets it warn
        means = {str(r): {m: float(np.nanmean([c[str(r)][m] for c in per_case])) for m in names} for r in labels}
    return {"mean": means, "foreground_mean": {m: float(np.mean([means[k][m] for k in means])) for m in names},
            "metric_per_case": per_case}


def assert_same(a, b) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b)
    else:
        assert a == b and type(a) is type(b), (a, b)


def test_summary_equals_nnunets_where_the_conventions_differ():
    shape = (6, 5, 4)
    ref_a, pred_a = np.zeros(shape, np.uint8), np.zeros(shape, np.uint8)
    ref_a[1:4, 1:4, 1:3] = 1
    pred_a[1:4, 2:4, 1:3] = 1
    pred_a[5, 0:2, 0] = 2  # structure 2: its mask file is missing in subject a, and the model predicts it there
    ref_b, pred_b = ref_a.copy(), pred_a.copy()
    ref_b[0, 0, 0:2] = 2  # in subject b it has a mask
    pred_b[5, 0:2, 0] = 0
    labels = {0: "background", 1: "liver", 2: "spleen", 3: "pancreas"}  # pancreas: in no reference, never predicted
    skips = ([2], [])
    rows = [score_subject(p, r, (1.0, 1.0, 1.0), 4, 1.0, skip)
            for (r, p), skip in zip(((ref_a, pred_a), (ref_b, pred_b)), skips)]
    cases = [(sid, sid, case_counts(row, p, skip))
             for sid, row, p, skip in zip("ab", rows, (pred_a, pred_b), skips)]
    summary = build_summary(cases, summary_keys(labels, None))
    expected = nnunet_reference([(ref_a, pred_a), (ref_b, pred_b)], [1, 2, 3])
    assert_same(summary["mean"], expected["mean"])
    assert_same(summary["foreground_mean"], expected["foreground_mean"])
    assert_same([c["metrics"] for c in summary["metric_per_case"]], expected["metric_per_case"])
    # where the two tools differ, on these arrays:
    assert math.isnan(rows[0]["dice"][2]) and summary["metric_per_case"][0]["metrics"]["2"]["Dice"] == 0.0
    ours, _, _ = aggregate(["a", "b"], rows, labels, EvaluateConfig())
    assert not math.isnan(ours["mean_dice"]) and math.isnan(summary["foreground_mean"]["Dice"])


def test_keys_are_the_datasets_label_values():
    assert summary_keys({0: "background", 1: "liver", 2: "spleen"}, {0: 0, 1: 3, 2: 7}) == {1: "3", 2: "7"}


def test_evaluate_writes_summary_json(tiny_cache, tmp_path):
    ckpt = make_checkpoint(tiny_cache, tmp_path / "run" / "checkpoint_best.pth")
    result = run_evaluation(ckpt, EvaluateConfig(device="cpu"), LoaderConfig(workers=0, batch_size=8),
                            split="train", out=tmp_path / "ev")
    text = (tmp_path / "ev" / "summary.json").read_text()
    summary = json.loads(text)  # NaN as the bare token, as nnU-Net writes it
    assert list(summary) == ["foreground_mean", "mean", "metric_per_case"]  # sorted keys
    assert [c["reference_file"] for c in summary["metric_per_case"]] == result.subjects
    doc = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    for case in summary["metric_per_case"]:
        for name, scores in doc["per_subject"][case["reference_file"]].items():
            theirs = case["metrics"][str(scores["index"])]
            if scores["dice"] is not None:  # scored by ctslice: the same counts and Dice
                assert (theirs["TP"], theirs["FP"], theirs["FN"]) == (scores["tp"], scores["fp"], scores["fn"])
                assert theirs["Dice"] == scores["dice"] or (math.isnan(theirs["Dice"]) and scores["dice"] is None)

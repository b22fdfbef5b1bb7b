"""Per-subject 3D metrics and detection counts on constructed volumes, against hand-computed values."""

import math

import numpy as np
import pytest

from ctslice.evaluate.detection import detection_counts, detection_rates
from ctslice.evaluate.metrics import score_subject, surface_dice


def _cube(shape=(8, 8, 8), lo=(2, 2, 2), size=4, label=1):
    v = np.zeros(shape, np.uint8)
    v[lo[0]:lo[0] + size, lo[1]:lo[1] + size, lo[2]:lo[2] + size] = label
    return v


def test_perfect_prediction_scores_one():
    ref = _cube()
    s = score_subject(ref.copy(), ref, (1.0, 1.0, 1.0), 3, tolerance_mm=2.0)
    assert s["dice"][1] == 1.0 and s["iou"][1] == 1.0 and s["surface_dice"][1] == 1.0
    assert s["tp"][1] == 64 and s["fp"][1] == 0 and s["fn"][1] == 0


def test_empty_in_both_is_nan_and_false_positive_on_empty_reference_is_zero():
    ref = _cube()
    pred = ref.copy()
    pred[0, 0, 0] = 2  # class 2: absent from the reference, one false-positive voxel
    s = score_subject(pred, ref, (1.0, 1.0, 1.0), 4, tolerance_mm=2.0)
    assert math.isnan(s["dice"][3]) and math.isnan(s["iou"][3]) and math.isnan(s["surface_dice"][3])
    assert s["dice"][2] == 0.0 and s["iou"][2] == 0.0 and s["surface_dice"][2] == 0.0
    assert s["fp"][2] == 1 and s["ref_ml"][2] == 0.0


def test_partial_overlap_counts_dice_iou_and_volumes():
    ref = np.zeros((4, 4, 4), np.uint8)
    ref[0:2, 0:2, 0:2] = 1                      # 8 voxels
    pred = np.zeros_like(ref)
    pred[1:3, 0:2, 0:2] = 1                     # 8 voxels, 4 shared
    s = score_subject(pred, ref, (2.0, 1.0, 1.0), 2, tolerance_mm=0.0)
    assert (s["tp"][1], s["fp"][1], s["fn"][1]) == (4, 4, 4)
    assert s["dice"][1] == pytest.approx(0.5) and s["iou"][1] == pytest.approx(1 / 3)
    assert s["ref_ml"][1] == pytest.approx(8 * 2.0 / 1000) and s["pred_ml"][1] == pytest.approx(8 * 2.0 / 1000)


def test_surface_dice_of_a_shifted_cube_uses_the_spacing():
    # A 4x4x4 cube and the same cube one voxel further along axis 0. At 2 mm slices the two end faces lie 2 mm
    # from the other cube's: within a 2 mm tolerance, not within 1.5 mm (the values against MONAI are in
    # test_surface_dice_reference.py); at 1 mm slices they lie 1 mm apart.
    a, b = _cube(lo=(2, 2, 2)) > 0, _cube(lo=(3, 2, 2)) > 0
    assert surface_dice(a, b, (2.0, 1.0, 1.0), 1.5) < 0.9
    assert surface_dice(a, b, (2.0, 1.0, 1.0), 2.0) == pytest.approx(1.0)
    assert surface_dice(a, b, (1.0, 1.0, 1.0), 1.0) == pytest.approx(1.0)
    assert surface_dice(a, np.zeros_like(a), (1.0, 1.0, 1.0), 2.0) == 0.0
    assert math.isnan(surface_dice(np.zeros_like(a), np.zeros_like(a), (1.0, 1.0, 1.0), 2.0))


def test_structures_missing_from_the_reference_are_not_scored():
    ref = _cube()
    pred = ref.copy()
    pred[0, 0, 0] = 2
    s = score_subject(pred, ref, (1.0, 1.0, 1.0), 3, tolerance_mm=2.0, skip=[2])
    assert math.isnan(s["dice"][2]) and math.isnan(s["pred_ml"][2]) and s["fp"][2] == -1
    assert s["dice"][1] == 1.0


def test_detection_counts_and_rates():
    # 4 subjects x 3 structures: volumes in ml and Dice
    ref = np.array([[5.0, 0.0, 0.0], [5.0, 0.0, 2.0], [5.0, 0.05, np.nan], [0.0, 0.0, 2.0]])
    pred = np.array([[5.0, 0.0, 1.0], [0.0, 1.0, 2.0], [5.0, 0.0, np.nan], [0.0, 0.0, 2.0]])
    dice = np.array([[0.9, np.nan, 0.0], [0.0, 0.0, 0.05], [0.8, 0.0, np.nan], [np.nan, np.nan, 0.7]])
    c = detection_counts(ref, pred, dice, min_ml=0.1, min_dice=0.1)
    # structure 0: hit, miss (not predicted), hit, true negative
    # structure 1: TN, false alarm, TN (0.05 ml is below the presence threshold), TN
    # structure 2: false alarm, miss (Dice 0.05 < 0.1), unscored (missing), hit
    assert c["hits"].tolist() == [2, 0, 1]
    assert c["misses"].tolist() == [1, 0, 1]
    assert c["false_alarms"].tolist() == [0, 1, 2]  # structure 2's misplaced one is a false alarm too
    assert c["true_negatives"].tolist() == [1, 3, 0]
    assert c["misplaced"].tolist() == [0, 0, 1]
    r = detection_rates(c["hits"], c["misses"], c["false_alarms"], c["true_negatives"], c["misplaced"])
    assert r["sensitivity"][0] == pytest.approx(2 / 3) and r["precision"][0] == 1.0
    assert r["precision"][2] == pytest.approx(1 / 3)  # 1 hit, 1 false alarm on an empty reference, 1 misplaced
    assert r["f1"][0] == pytest.approx(0.8) and r["specificity"][1] == pytest.approx(0.75)
    assert r["specificity"][2] == 0.0  # one subject lacking it, predicted there; the misplaced one is not counted
    assert math.isnan(r["sensitivity"][1])  # never present in a reference
    total = detection_rates(3, 2, 2, 4)
    assert total["f1"] == pytest.approx(6 / 10)


def test_misplaced_predictions_lower_precision():
    # Every structure present in reference and prediction, but predicted elsewhere (Dice 0) in half the subjects:
    # with misplaced predictions counted as misses only, precision stayed 1.0.
    ref = np.full((4, 2), 5.0)
    pred = np.full((4, 2), 5.0)
    dice = np.array([[0.9, 0.0], [0.0, 0.9], [0.9, 0.0], [0.0, 0.9]])
    c = detection_counts(ref, pred, dice, min_ml=0.1, min_dice=0.1)
    assert c["hits"].tolist() == [2, 2] and c["misses"].tolist() == [2, 2] and c["false_alarms"].tolist() == [2, 2]
    r = detection_rates(*(c[k] for k in ("hits", "misses", "false_alarms", "true_negatives", "misplaced")))
    assert r["precision"].tolist() == [0.5, 0.5] and r["sensitivity"].tolist() == [0.5, 0.5]
    assert np.isnan(r["specificity"]).all()  # no subject lacks either structure


def test_dice_std_is_the_sample_deviation_and_nan_below_two_subjects():
    from ctslice.evaluate.report import sample_std

    dice = np.array([[0.5, 0.9, np.nan], [0.7, np.nan, np.nan], [0.9, np.nan, 0.3]])
    std = sample_std(dice)
    assert std[0] == pytest.approx(0.2)  # ddof=1: sqrt(((-0.2)^2 + 0 + 0.2^2) / 2)
    assert math.isnan(std[1]) and math.isnan(std[2])  # scored in one subject: no spread to speak of


def test_report_flags_misplaced_predictions_gives_sample_std_and_names_its_definitions():
    from ctslice.config import EvaluateConfig
    from ctslice.evaluate.report import aggregate

    labels = {0: "background", 1: "liver", 2: "spleen"}
    ref = np.zeros((4, 10, 10), np.uint8)
    ref[1:3, 1:4, 1:4] = 1
    ref[1:3, 6:9, 6:9] = 2
    good = ref.copy()
    misplaced = ref.copy()
    misplaced[ref == 1] = 0
    misplaced[1:3, 6:9, 1:4] = 1                      # liver predicted where there is none: Dice 0
    rows = [score_subject(p, ref, (5, 5, 5), 3, 2.0, skip=skip)  # 18 voxels of 0.125 ml: present
            for p, skip in ((good, []), (misplaced, []), (good, [2]))]
    summary, per_class, _ = aggregate(["a", "b", "c"], rows, labels, EvaluateConfig())
    liver, spleen = per_class
    assert (liver["hits"], liver["misses"], liver["false_alarms"], liver["misplaced"]) == (2, 1, 1, 1)
    assert liver["precision"] == pytest.approx(2 / 3)  # was 1.0: the misplaced liver was a miss only
    assert liver["dice_std"] == pytest.approx(np.std([1.0, 0.0, 1.0], ddof=1))
    assert spleen["subjects_scored"] == 2 and spleen["dice_std"] == 0.0
    assert summary["detection"]["precision"] == pytest.approx(4 / 5)
    assert "surfel-based" in summary["definitions"]["surface_dice"] and "2.0 mm" in summary["definitions"][
        "surface_dice"]
    one = aggregate(["a"], rows[:1], labels, EvaluateConfig())[1]
    assert all(math.isnan(r["dice_std"]) for r in one)  # one subject: no spread (was 0.0)

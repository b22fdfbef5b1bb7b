"""The logic of the worst-subject overlays: what each panel shows in which colour, and what its legend lists
(pure functions; no PNG pixels compared)."""

import numpy as np

from ctslice.colors import label_color
from ctslice.evaluate.figures import overlay_panels
from ctslice.view.overlay import UNKNOWN_GREYS, paint_labels, swatch

LABELS = {0: "background", 1: "liver", 2: "spleen", 3: "lung", 4: "kidney", 5: "aorta"}


def _item(missing=()):
    image = np.full((6, 6), 40, np.int16)
    image[:, 3:] = -1000                       # right half: air (lungs)
    ref = np.zeros((6, 6), np.uint8)
    ref[0:3, 0:3] = 1                          # liver on soft tissue
    ref[0:3, 3:6] = 3                          # lung on air
    pred = ref.copy()
    pred[3:6, 0:3] = 2                         # spleen predicted where the reference has background
    return {"slice": 7, "image": image, "ref": ref, "pred": pred, "missing": list(missing)}


def test_a_structure_without_reference_mask_is_hatched_unknown_not_background():
    (_, _, _), (_, ref_rgb, ref_legend), (_, _, pred_legend) = overlay_panels(_item(missing=[2]), LABELS, 6)
    unknown = ref_rgb[3:6, 0:3]
    assert set(np.unique(unknown)) <= set(np.float32(UNKNOWN_GREYS))  # hatched greys, not the CT's grey
    assert len(set(np.unique(unknown))) == 2
    assert ref_legend[-1].hatched and "unknown" in ref_legend[-1].text and "spleen" in ref_legend[-1].text
    assert [e.text for e in pred_legend] == ["1 liver", "2 spleen (no reference mask: not scored)", "3 lung"]


def test_with_every_mask_present_the_same_pixels_are_reference_background():
    _, (_, ref_rgb, ref_legend), _ = overlay_panels(_item(), LABELS, 6)
    gray = ref_rgb[4, 0]
    assert np.allclose(gray, gray[0]) and not any(e.hatched for e in ref_legend)
    assert [e.text for e in ref_legend] == ["1 liver", "3 lung"]  # only what the panel shows


def test_labels_on_air_match_their_legend_swatch():
    _, (_, rgb, legend), _ = overlay_panels(_item(), LABELS, 6)
    swatches = {e.text: np.array(e.colour) for e in legend}
    lung_on_air, liver_on_tissue = rgb[1, 4], rgb[1, 1]
    assert np.abs(lung_on_air - swatches["3 lung"]).max() <= 0.05  # was 0.55 * colour: blended with black
    assert np.abs(liver_on_tissue - swatches["1 liver"]).max() <= 0.05


def test_paint_labels_keeps_every_label_near_its_swatch_at_any_grey():
    colours = np.array([label_color(i) for i in range(4)], np.float32) / 255
    gray = np.array([[0.0, 0.5, 1.0]], np.float32)
    label = np.array([[3, 3, 3]], np.uint8)
    rgb = paint_labels(gray, label, colours)
    assert np.abs(rgb[0] - swatch(colours[3])).max() <= 0.05
    assert np.allclose(paint_labels(gray, label, colours, alpha=1.0)[0], colours[3])  # opaque: the colour itself
    assert np.allclose(paint_labels(gray, np.zeros_like(label), colours)[0], gray[0][:, None])  # no label: CT

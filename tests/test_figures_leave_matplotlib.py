"""Figures drawn through the library leave the caller's matplotlib as it was (no backend switched, no pyplot
figure left open), and training figures paint labels with the one overlay of `cache show` and evaluation."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest

from ctslice.colors import color_table
from ctslice.evaluate.figures import write_figures
from ctslice.train.plots import plot_history, plot_samples
from ctslice.view.overlay import paint_labels

NAMES = {0: "background", 1: "liver", 2: "spleen"}


def _sample():
    ct = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    ref = np.zeros((8, 8), np.uint8)
    ref[:4, :4], ref[4:, 4:] = 1, 2
    return {"ct": ct, "reference": ref, "prediction": ref[::-1].copy(), "caption": "s1 slice 3"}


def _evaluation_inputs():
    item = {"slice": 3, "image": np.full((8, 8), 40, np.int16), "ref": _sample()["reference"],
            "pred": _sample()["prediction"], "missing": []}
    per_class = [{"index": 1, "structure": "liver", "dice": 0.5, "f1": 0.5, "sensitivity": 1.0, "precision": 0.5,
                  "hits": 1, "misses": 0, "false_alarms": 1}]
    per_subject = [{"subject": "s1", "index": 1, "structure": "liver", "dice": 0.5, "ref_ml": 2.0}]
    settings = {"worst_subjects": 1, "detection_min_ml": 0.1, "detection_dice": 0.1}
    return {"subject_mean_dice": {"s1": 0.5}}, per_class, per_subject, [item], NAMES, settings


@pytest.fixture
def caller_backend():
    """A caller that chose another backend than the Agg the figures draw with."""
    before = matplotlib.get_backend()
    matplotlib.use("pdf")
    yield "pdf"
    matplotlib.use(before)


def test_training_and_evaluation_figures_leave_the_backend_and_pyplot_alone(tmp_path, caller_backend):
    import matplotlib.pyplot as plt

    open_before = plt.get_fignums()
    epochs = [{"epoch": 1, "train/loss": 1.0, "val/loss": 1.1, "learning_rate": 1e-3}]
    plot_history(epochs, tmp_path / "training_history.png")
    plot_samples([_sample()], NAMES, tmp_path / "test_inference.png", columns=("ct", "reference", "prediction"),
                 title="val")
    written = write_figures(tmp_path, *_evaluation_inputs())
    assert matplotlib.get_backend() == caller_backend and plt.get_fignums() == open_before
    assert {p.name for p in tmp_path.iterdir()} == {"training_history.png", "test_inference.png",
                                                    *(p.name for p in written)}
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in tmp_path.iterdir())  # PNG whatever the backend


def test_training_figures_paint_labels_as_cache_show_and_evaluation_do(tmp_path, monkeypatch):
    from matplotlib.axes import Axes

    shown = []
    real = Axes.imshow
    monkeypatch.setattr(Axes, "imshow", lambda self, image, *a, **k: shown.append(np.asarray(image))
                        or real(self, image, *a, **k))
    sample = _sample()
    plot_samples([sample], NAMES, tmp_path / "s.png", columns=("ct", "reference", "prediction"), title="t")
    colours = color_table(3).astype(np.float32) / 255
    assert np.array_equal(shown[0], sample["ct"])
    assert np.array_equal(shown[1], paint_labels(sample["ct"], sample["reference"], colours))
    assert np.array_equal(shown[2], paint_labels(sample["ct"], sample["prediction"], colours))

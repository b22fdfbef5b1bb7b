"""The run's figures (matplotlib's Agg canvas through `Figure`, no pyplot: no global backend switched under a caller
that uses pyplot itself; written atomically):

- training_history.png: six panels (loss, Dice, val IoU, overfitting, gradient norm, learning rate on a log scale);
- sample_visualization.png: training slices, CT with the reference labels in colour and a legend of the names;
- test_inference.png: val slices, CT | reference | prediction side by side.

Labels are painted by `view.overlay.paint_labels` on the CT in the soft-tissue window (`predict_examples`), as
`cache show` and the evaluation figures paint them, so a structure looks the same in every figure; the legend
lists only the structures visible in the figure, which keeps it readable at 118 classes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..colors import color_table
from ..files import write_atomic
from ..view.overlay import paint_labels, swatch


def _figure(rows: int, columns: int, figsize: tuple[float, float], **kwargs):
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(rows, columns, **kwargs)


def _save(fig, path: Path, tight: bool = False) -> None:
    """tight: grow the canvas to what lies outside the axes (a legend below them); measuring that costs most of
    the rendering time (0.8 against 0.1 s for the six-panel history), so only figures that need it ask. Not
    durable: the next epoch draws it again."""
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight" if tight else None),
                 durable=False)


def plot_history(epochs: list[dict], path: Path) -> None:
    """The six-panel training_history.png from the history's per-epoch records."""
    fig, axes = _figure(2, 3, figsize=(15, 8))
    x = [e["epoch"] for e in epochs]

    def series(key):
        return [np.nan if e.get(key) is None else e[key] for e in epochs]  # (null in the history: NaN)

    panels = [
        ("Loss", [("train/loss", "train"), ("val/loss", "val")], "linear"),
        ("Dice (foreground mean)", [("train/dice", "train"), ("val/dice", "val")], "linear"),
        ("Val IoU", [("val/iou", "val")], "linear"),
        ("Overfitting: train - val Dice", [("comparison/dice_gap", "Dice gap")], "linear"),
        ("Gradient norm (mean per epoch)", [("gradient_norm", "L2 norm")], "linear"),
        ("Learning rate", [("learning_rate", "lr")], "log"),
    ]
    for ax, (title, lines, scale) in zip(axes.flat, panels):
        for key, label in lines:
            ax.plot(x, series(key), marker="o", markersize=3, label=label)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)  # whole epochs on the axis
        ax.set_yscale(scale)
        ax.grid(alpha=0.3)
        if len(lines) > 1:
            ax.legend()
    axes.flat[3].axhline(0, color="grey", linewidth=0.8)
    fig.tight_layout()
    _save(fig, path)


def _legend(fig, shown: set[int], names: dict[int, str], table: np.ndarray) -> None:
    from matplotlib.patches import Patch

    handles = [Patch(color=swatch(table[i]), label=names.get(i, str(i))) for i in sorted(shown) if i > 0]
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=min(6, len(handles)), fontsize=8, frameon=False,
                   bbox_to_anchor=(0.5, -0.02 - 0.025 * (len(handles) // 6)))


def plot_samples(samples: list[dict], names: dict[int, str], path: Path, *, columns: tuple[str, ...],
                 title: str) -> None:
    """One row per sample ({"ct": (H, W) in [0, 1], "reference", "prediction": (H, W) int, "caption"}), one
    column per entry of `columns` ("ct", "reference", "prediction"), and a legend of the structures shown."""
    table = color_table(max(names) + 1).astype(np.float32) / 255
    rows = max(len(samples), 1)
    fig, axes = _figure(rows, len(columns), figsize=(3.2 * len(columns), 3.2 * rows), squeeze=False)
    shown: set[int] = set()
    for r, sample in enumerate(samples):
        for c, kind in enumerate(columns):
            ax = axes[r, c]
            if kind == "ct":
                ax.imshow(sample["ct"], cmap="gray", vmin=0, vmax=1)
            else:
                labels = np.asarray(sample[kind])
                shown.update(np.unique(labels).tolist())
                ax.imshow(paint_labels(sample["ct"], labels, table), interpolation="nearest")
            ax.set_title(f"{sample['caption']}\n{kind}" if c == 0 else kind, fontsize=9)
            ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    _legend(fig, shown, names, table)
    _save(fig, path, tight=True)

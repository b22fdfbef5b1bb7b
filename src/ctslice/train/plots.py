"""The run's figures (matplotlib, Agg backend, written atomically):

- training_history.png: six panels (loss, Dice, val IoU, overfitting, gradient norm, learning rate on a log scale);
- sample_visualization.png: training slices, CT with the reference labels in colour and a legend of the names;
- test_inference.png: val slices, CT | reference | prediction side by side.

Colours come from `ctslice.colors` (the project's one table), so a structure looks the same in every figure; the
legend lists only the structures visible in the figure, which keeps it readable at 118 classes.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..colors import color_table


def _figure(*args, **kwargs):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, *plt.subplots(*args, **kwargs)


def _save(plt, fig, path: Path, tight: bool = False) -> None:
    """tight: grow the canvas to what lies outside the axes (a legend below them); measuring that costs most of
    the rendering time (0.8 against 0.1 s for the six-panel history), so only figures that need it ask."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")
    try:
        fig.savefig(tmp, dpi=100, bbox_inches="tight" if tight else None)
        os.replace(tmp, path)
    finally:  # a failed write (full disk) leaves neither a half-written temporary nor an open figure
        plt.close(fig)
        tmp.unlink(missing_ok=True)


def plot_history(epochs: list[dict], path: Path) -> None:
    """The six-panel training_history.png from the history's per-epoch records."""
    plt, fig, axes = _figure(2, 3, figsize=(15, 8))
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
    _save(plt, fig, path)


def overlay(ct: np.ndarray, labels: np.ndarray, table: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """RGB float (H, W, 3): the CT in grey (ct in [0, 1]) with labels > 0 blended in their colours."""
    grey = np.repeat(np.clip(ct, 0, 1)[..., None], 3, axis=2)
    colour = table[labels].astype(np.float32) / 255
    mask = (labels > 0)[..., None]
    return np.where(mask, (1 - alpha) * grey + alpha * colour, grey)


def _legend(fig, shown: set[int], names: dict[int, str], table: np.ndarray) -> None:
    from matplotlib.patches import Patch

    handles = [Patch(color=table[i] / 255, label=names.get(i, str(i))) for i in sorted(shown) if i > 0]
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=min(6, len(handles)), fontsize=8, frameon=False,
                   bbox_to_anchor=(0.5, -0.02 - 0.025 * (len(handles) // 6)))


def plot_samples(samples: list[dict], names: dict[int, str], path: Path, *, columns: tuple[str, ...],
                 title: str) -> None:
    """One row per sample ({"ct": (H, W) in [0, 1], "reference", "prediction": (H, W) int, "caption"}), one
    column per entry of `columns` ("ct", "reference", "prediction"), and a legend of the structures shown."""
    table = color_table(max(names) + 1)
    rows = max(len(samples), 1)
    plt, fig, axes = _figure(rows, len(columns), figsize=(3.2 * len(columns), 3.2 * rows), squeeze=False)
    shown: set[int] = set()
    for r, sample in enumerate(samples):
        for c, kind in enumerate(columns):
            ax = axes[r, c]
            if kind == "ct":
                ax.imshow(sample["ct"], cmap="gray", vmin=0, vmax=1)
            else:
                labels = np.asarray(sample[kind])
                shown.update(np.unique(labels).tolist())
                ax.imshow(overlay(sample["ct"], labels, table))
            ax.set_title(f"{sample['caption']}\n{kind}" if c == 0 else kind, fontsize=9)
            ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    _legend(fig, shown, names, table)
    _save(plt, fig, path, tight=True)

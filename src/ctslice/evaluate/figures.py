"""Evaluation figures (PNG), readable with 117 structures: one row per structure, the figure as tall as needed.

    dice_per_structure.png   per-subject Dice per structure as box plots, sorted by mean Dice
    detection.png            sensitivity and precision of detection per structure
    dice_vs_volume.png       Dice against reference volume (log scale), one dot per subject and structure
    worst_<subject>.png      CT, reference and prediction on the same slice, for the worst subjects; colours
                             blended as `cache show` blends them (view.overlay.paint_labels), a legend of the
                             structures visible under each panel, unknown reference regions hatched grey

Drawn on matplotlib's Agg canvas through `Figure` (no pyplot): no global backend switched under a caller that uses
pyplot itself. Written atomically (files.write_atomic), not durably: they are drawn again from evaluation.json's
numbers by the next run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..colors import color_table, label_color
from ..files import write_atomic
from ..view.overlay import UNKNOWN_GREYS, WINDOWS, paint_labels, swatch, window_gray

ROW_INCH = 0.16  # height per structure row: 117 rows at 6 pt labels stay legible


def write_figures(out: Path, summary: dict, per_class: list[dict], per_subject: list[dict], overlays: list[dict],
                  labels: Mapping[int, str], settings: Mapping) -> list[Path]:
    paths = [
        _dice_boxes(out / "dice_per_structure.png", per_class, per_subject),
        _detection(out / "detection.png", per_class, settings),
        _dice_vs_volume(out / "dice_vs_volume.png", per_subject),
    ]
    subject_dice = summary["subject_mean_dice"]
    order = sorted(range(len(overlays)), key=lambda i: _nan_last(list(subject_dice.values())[i]))
    for i in order[: settings["worst_subjects"]]:
        sid = list(subject_dice)[i]
        paths.append(_overlay(out / f"worst_{sid}.png", sid, subject_dice[sid], overlays[i], labels,
                              len(labels)))
    return paths


def _nan_last(v: float) -> float:
    return math.inf if v is None or math.isnan(v) else v


def _subplots(figsize: tuple[float, float], *args, **kwargs):
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*args, **kwargs)


def _tall(rows: int, width: float = 8.0):
    fig, ax = _subplots((width, max(3.0, 1.2 + ROW_INCH * rows)))
    ax.tick_params(axis="y", labelsize=6 if rows > 40 else 8)
    return fig, ax


def _write(fig, path: Path, **kwargs) -> Path:
    return write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, **kwargs), durable=False)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    return _write(fig, path)


def _dice_boxes(path: Path, per_class: list[dict], per_subject: list[dict]) -> Path:
    by_structure: dict[str, list[float]] = {}
    for row in per_subject:
        if not math.isnan(row["dice"]):
            by_structure.setdefault(row["structure"], []).append(row["dice"])
    rows = sorted((r for r in per_class if r["structure"] in by_structure), key=lambda r: r["dice"])
    fig, ax = _tall(len(rows))
    data = [by_structure[r["structure"]] for r in rows]
    if data:
        box = ax.boxplot(data, orientation="horizontal", widths=0.6, patch_artist=True, showfliers=True,
                         flierprops={"markersize": 2})
        for patch, r in zip(box["boxes"], rows):
            patch.set_facecolor(np.array(label_color(r["index"])) / 255)
        ax.scatter([r["dice"] for r in rows], range(1, len(rows) + 1), marker="|", color="black", s=30, zorder=3,
                   label="mean")
        ax.set_yticks(range(1, len(rows) + 1), [r["structure"] for r in rows])
        ax.legend(loc="lower right", fontsize=7)
    ax.set_ylim(0.3, len(rows) + 0.7)
    ax.set_xlim(0, 1)
    ax.set_xlabel("Dice per subject (3D); boxes: quartiles and median")
    ax.set_title("Dice per structure, sorted by mean")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def _detection(path: Path, per_class: list[dict], settings: Mapping) -> Path:
    rows = sorted(per_class, key=lambda r: (_nan_last(r["f1"]), r["structure"]), reverse=True)
    fig, ax = _tall(len(rows))
    y = np.arange(len(rows))
    sens = np.nan_to_num([r["sensitivity"] for r in rows], nan=0.0)
    prec = np.nan_to_num([r["precision"] for r in rows], nan=0.0)
    ax.barh(y - 0.2, sens, height=0.4, label="sensitivity (hits / present)", color="tab:blue")
    ax.barh(y + 0.2, prec, height=0.4, label="precision (hits / predicted)", color="tab:orange")
    ax.set_yticks(y, [f"{r['structure']} ({r['hits']}/{r['hits'] + r['misses']}, FA {r['false_alarms']})"
                      for r in rows])
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"detection per structure, worst F1 on top; labels: hits/present, FA = false alarms\n"
                  f"(present: >= {settings['detection_min_ml']} ml; hit: present in both and Dice >= "
                  f"{settings['detection_dice']}; present in both with lower Dice: a miss and a false alarm)",
                  fontsize=8)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=2, fontsize=8, frameon=False)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def _dice_vs_volume(path: Path, per_subject: list[dict]) -> Path:
    rows = [r for r in per_subject if not math.isnan(r["dice"]) and r["ref_ml"] > 0]
    fig, ax = _subplots((7, 5))
    if rows:
        colors = np.array([label_color(r["index"]) for r in rows]) / 255
        ax.scatter([r["ref_ml"] for r in rows], [r["dice"] for r in rows], c=colors, s=10, alpha=0.8)
        ax.set_xscale("log")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("reference volume (ml, log scale)")
    ax.set_ylabel("Dice")
    ax.set_title("Dice against structure volume (one dot per subject and structure)")
    ax.grid(alpha=0.3)
    return _save(fig, path)


@dataclass(frozen=True)
class LegendEntry:
    text: str
    colour: tuple[float, float, float]
    """RGB in [0, 1]: exactly the colour the panel shows the structure in (over mid grey)."""
    hatched: bool = False


def overlay_panels(item: Mapping, labels: Mapping[int, str], num_labels: int
                   ) -> list[tuple[str, np.ndarray, list[LegendEntry]]]:
    """(title, RGB image, legend entries) of the CT, reference and prediction panels of a worst-subject figure.

    Each legend lists only the structures visible in its panel. Structures whose mask is missing for this
    subject (`item["missing"]`: not scored there) are unknown in the reference: reference background where the
    prediction shows one of them is hatched grey ("unknown"), not drawn as background, so that a prediction
    there does not look like a false positive; in the prediction panel they are named as not scored."""
    colours = color_table(num_labels).astype(np.float32) / 255
    gray = window_gray(item["image"], *WINDOWS["soft"])
    ref, pred = item["ref"], item["pred"]
    missing = sorted(int(i) for i in item.get("missing", ()))
    unknown = (ref == 0) & np.isin(pred, missing)

    def name(i: int) -> str:
        return f"{i} {labels.get(i, '?')}" + (" (no reference mask: not scored)" if i in missing else "")

    panels = [("CT", np.repeat(gray[..., None], 3, axis=-1), [])]
    for title, lab, unk in (("reference", ref, unknown), ("prediction", pred, None)):
        shown = [int(i) for i in np.unique(lab) if i > 0]
        entries = [LegendEntry(name(i), tuple(float(v) for v in swatch(colours[i]))) for i in shown]
        if unk is not None and unk.any():
            which = ", ".join(labels.get(int(i), "?") for i in np.unique(pred[unk]))
            entries.append(LegendEntry(f"unknown: no reference mask ({which})", (UNKNOWN_GREYS[1],) * 3, True))
        panels.append((title, paint_labels(gray, lab, colours, unknown=unk), entries))
    return panels


def _overlay(path: Path, sid: str, dice: float, item: dict, labels: Mapping[int, str], num_labels: int
             ) -> Path:
    from matplotlib.patches import Patch

    panels = overlay_panels(item, labels, num_labels)
    fig, axes = _subplots((12, 4.4), 1, 3)  # the legends below grow the saved figure (bbox "tight")
    for ax, (title, rgb, entries) in zip(axes, panels):
        ax.imshow(rgb, interpolation="nearest")
        ax.set_title(title)
        ax.axis("off")
        if entries:
            handles = [Patch(facecolor=e.colour, edgecolor=(UNKNOWN_GREYS[0],) * 3 if e.hatched else e.colour,
                             hatch="////" if e.hatched else None, label=e.text) for e in entries]
            ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.01), ncol=2, fontsize=6,
                      frameon=False, handlelength=1.2, columnspacing=0.8)
    fig.suptitle(f"{sid}: slice {item['slice']} (most wrong voxels), mean Dice {dice:.3f}")
    fig.subplots_adjust(left=0.01, right=0.99, top=0.9, bottom=0.02, wspace=0.04)
    return _write(fig, path, bbox_inches="tight")  # legends below the axes: the saved figure grows to them


def cv_figure(path: Path, rows: list[dict], folds: list[str], which: str) -> Path:
    """cv_summary.png: per structure (worst mean on top), the mean val Dice over the folds as a bar with the
    standard deviation as an error bar, and each fold's value as a dot; the mean over structures last."""
    scored = sorted((r for r in rows[:-1] if r["folds_scored"]), key=lambda r: r["mean"], reverse=True)
    shown = [rows[-1], *scored] if rows[-1]["folds_scored"] else scored
    fig, ax = _tall(len(shown))
    y = np.arange(len(shown))
    ax.barh(y, [r["mean"] for r in shown], xerr=[r["std"] for r in shown], height=0.6, color="tab:blue",
            alpha=0.5, error_kw={"elinewidth": 1, "capsize": 2}, label="mean +- std over folds")
    for k, name in enumerate(folds):
        ax.scatter([r[name] for r in shown], y, s=22, zorder=4, label=name, color=f"C{(k + 1) % 10}",
                   edgecolors="black", linewidths=0.4)
    ax.set_yticks(y, [r["structure"] for r in shown])
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"val Dice at each run's {which} checkpoint")
    ax.set_title(f"cross-validation: {len(folds)} run(s)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=7)  # outside: never over a fold's dot
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)

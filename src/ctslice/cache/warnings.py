"""What a cache's subjects lost or lack, summed up from the manifest: labels cut off by the crop, missing mask
files, overlapping masks, and the dataset's own warnings (meta.csv rows). Shown at the end of every preprocess
and by `cache info`, so that nothing the manifest knows stays unseen."""

from __future__ import annotations

from typing import Any

from .manifest import Manifest

WORST = 5  # subjects named per kind of warning


def _kind(rows: list[tuple[str, int, float | None]], unit: str) -> dict[str, Any]:
    """A share of None (its denominator unknown) ranks by count after the known shares and is not shown."""
    rows = sorted((r for r in rows if r[1] > 0), key=lambda r: (r[2] is None, -(r[2] or 0), -r[1], r[0]))
    return {"subjects": len(rows), unit: sum(r[1] for r in rows),
            "worst": [{"subject": sid, unit: n, "share": None if share is None else round(share, 4)}
                      for sid, n, share in rows[:WORST]]}


def warning_summary(manifest: Manifest) -> dict[str, Any]:
    """{"cropped", "missing_masks", "overlaps"}: each {"subjects", <count>, "worst": [...]}, only the kinds
    that occur; "dataset": the dataset's warnings, if any. Shares: of the subject's labelled voxels on the same
    grid, each counted once (cropped: the cached grid; overlaps: the original grid, where masks are merged), or of
    the label map's structures (missing masks). Overlaps of records without their original count have no share."""
    records = manifest.subjects.table.values()  # the rows: no record file is read
    structures = max(manifest.num_labels - 1, 1)

    def labelled(r) -> int:
        return max(r.labelled + r.cropped_label_voxels, 1)

    # only subjects that have the warning (a run after every preprocess: most subjects have none)
    kinds = {
        "cropped": _kind([(r.id, r.cropped_label_voxels, r.cropped_label_voxels / labelled(r)) for r in records
                          if r.cropped_label_voxels > 0], "voxels"),
        "missing_masks": _kind([(r.id, r.missing, r.missing / structures) for r in records if r.missing > 0],
                               "masks"),
        "overlaps": _kind([(r.id, r.overlap_voxels, r.overlap_voxels / r.original_label_voxels
                            if r.original_label_voxels else None) for r in records if r.overlap_voxels > 0],
                          "voxels"),
    }
    summary: dict[str, Any] = {name: kind for name, kind in kinds.items() if kind["subjects"]}
    if manifest.dataset.get("warnings"):
        summary["dataset"] = list(manifest.dataset["warnings"])
    return summary


_SAY = {"cropped": ("lost {voxels:,} labelled voxels to the crop (--size)", "voxels"),
        "missing_masks": ("lack {masks:,} mask file(s) in all (unknown there, recorded as missing_structures)",
                          "masks"),
        "overlaps": ("have {voxels:,} voxels in more than one mask (the later label index won; share: of the "
                     "subject's labelled voxels on its original grid)", "voxels")}


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """The summary as lines of text: one per kind, naming the worst subjects."""
    lines = []
    for name, (text, unit) in _SAY.items():
        kind = summary.get(name)
        if kind:
            worst = ", ".join(f"{w['subject']} ({w[unit]:,}" + ("" if w["share"] is None else f", {w['share']:.1%}")
                              + ")" for w in kind["worst"])
            lines.append(f"{kind['subjects']} subject(s) " + text.format(**kind) + f"; most: {worst}")
    lines += summary.get("dataset", [])
    return lines

"""The label map as JSON, one format for the manifest, label_map.json and checkpoints: {"0": "background",
"1": "spleen", ...}. Index 0 is background; structures follow the indices, and where masks overlap the later
index wins (preprocess/labels.py merges them in this order)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def label_map_to_json(label_map: Mapping[int, str]) -> dict[str, str]:
    """{0: "background", 1: "spleen"} -> {"0": "background", "1": "spleen"}, in index order."""
    return {str(k): v for k, v in sorted(label_map.items())}


def label_map_problem(data: Any) -> str | None:
    """Why `data` (read from a file: untrusted) is not a label map, or None: an object of decimal indices
    0..N-1 (ASCII digits, no gaps) to non-empty names."""
    if not isinstance(data, dict) or not data:
        return "label_map is not an object of index -> name"
    if not all(isinstance(k, str) and k.isascii() and k.isdigit() and isinstance(v, str) and v
               for k, v in data.items()):
        return "label_map is not an object of index -> name"
    if sorted(int(k) for k in data) != list(range(len(data))):
        return "label_map indices are not 0..N-1"
    return None


def label_map_from_json(data: Mapping[str, str]) -> dict[int, str]:
    """{"0": "background", ...} (a manifest's or a checkpoint's label map, checked with label_map_problem first)
    -> {0: "background", ...}."""
    return {int(k): v for k, v in sorted(data.items(), key=lambda kv: int(kv[0]))}


def parse_label_values(values: Any, label_map: Any) -> dict[int, int] | None:
    """A dataset's own label values as JSON (a manifest's or a checkpoint's: untrusted), {"0": 0, "1": 1, "2": 3}
    -> {0: 0, 1: 1, 2: 3} when it covers the label map with distinct non-negative integers and 0 for background;
    None otherwise (then the label indices are written)."""
    if not isinstance(values, dict) or not isinstance(label_map, dict) or set(values) != set(label_map):
        return None
    try:
        parsed = {int(k): v for k, v in values.items()}
    except (TypeError, ValueError):
        return None
    if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**16 for v in parsed.values()) \
            or len(set(parsed.values())) != len(parsed) or parsed.get(0) != 0:
        return None
    return parsed

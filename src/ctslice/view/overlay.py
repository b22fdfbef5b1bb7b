"""CT windowing and label overlays as pure functions on arrays, shared by `cache show` and any figure that
shows labels (colours from ctslice.colors, the one colour table)."""

from __future__ import annotations

import math

import numpy as np

from ..colors import color_table
from ..errors import CtsliceError

WINDOWS = {"soft": (400, 40), "bone": (1800, 400), "lung": (1500, -600)}
"""name -> (width, level) in HU: the usual radiology presets."""


def parse_window(value: str) -> tuple[float, float]:
    """'soft', 'bone', 'lung' or 'W,L' (e.g. '350,50') -> (width, level)."""
    if value.strip().lower() in WINDOWS:
        return WINDOWS[value.strip().lower()]
    try:
        width, level = (float(v) for v in value.split(","))
    except ValueError:
        raise CtsliceError(f"window must be {', '.join(WINDOWS)} or WIDTH,LEVEL in HU, got {value!r}") from None
    if not (math.isfinite(width) and math.isfinite(level)):
        raise CtsliceError(f"window width and level must be finite numbers of HU, got {value!r}")
    if width <= 0:
        raise CtsliceError(f"window width must be positive, got {width}")
    return width, level


def window_gray(image: np.ndarray, width: float, level: float) -> np.ndarray:
    """HU -> float32 grey values in [0, 1] for the window."""
    return np.clip((image.astype(np.float32) - (level - width / 2)) / width, 0.0, 1.0)


OPACITY = 0.7
"""Share of a label's own colour in an overlay pixel; the rest is the CT lifted into [LIFT, 1]."""
LIFT = 0.7
"""Under a label the CT's grey is mapped to [LIFT, 1] before blending: a label on air (the lungs, grey 0) is not
blended with black, so every labelled pixel lies within (1 - OPACITY) * (1 - LIFT) / 2 = 0.045 of its legend
swatch (the colour at mid grey) while the CT's texture still shows a little."""
UNKNOWN_GREYS = (0.45, 0.75)
"""The two greys of the hatching that marks unknown pixels (no reference mask for what is predicted there)."""


def swatch(colour: np.ndarray, alpha: float = OPACITY) -> np.ndarray:
    """The legend colour of a label colour (RGB in [0, 1]): what `paint_labels` draws over mid grey."""
    return alpha * np.asarray(colour, dtype=np.float32) + (1 - alpha) * (LIFT + (1 - LIFT) * 0.5)


def hatch(shape: tuple[int, int], period: int = 4) -> np.ndarray:
    """float32 (H, W) grey diagonal stripes, `period` pixels wide: unknown, and visibly not background."""
    rows, cols = np.indices(shape)
    return np.where(((rows + cols) // period) % 2 == 0, *UNKNOWN_GREYS).astype(np.float32)


def paint_labels(gray: np.ndarray, label: np.ndarray, colours: np.ndarray, alpha: float = OPACITY,
                 unknown: np.ndarray | None = None) -> np.ndarray:
    """float32 (H, W, 3) in [0, 1]: grey CT (H, W) with each labelled pixel in its colour (`colours`: (N, 3) in
    [0, 1], indexed by label) blended over the lifted CT, so it matches `swatch` whatever the HU; pixels of
    `unknown` (bool) hatched grey instead. The one blending rule of `cache show` and the evaluation figures."""
    gray = np.asarray(gray, dtype=np.float32)
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    labelled = label > 0
    base = (LIFT + (1 - LIFT) * gray[labelled])[..., None]
    rgb[labelled] = alpha * colours[label[labelled]] + (1 - alpha) * base
    if unknown is not None and unknown.any():
        rgb[unknown] = hatch(gray.shape)[unknown][..., None]
    return rgb


def overlay_rgb(image: np.ndarray, label: np.ndarray, num_labels: int, window: tuple[float, float],
                alpha: float = OPACITY) -> np.ndarray:
    """float32 (..., 3) RGB in [0, 1]: the windowed CT, with labelled pixels painted by `paint_labels`."""
    colours = color_table(num_labels).astype(np.float32) / 255
    return paint_labels(window_gray(image, *window), label, colours, alpha)


AXES = ("axial", "coronal", "sagittal")
"""The planes, in the order of the cached (slice, row, column) axes."""


def parse_axis(value: str) -> str:
    """'axial', 'Coronal', ' SAGITTAL' -> the plane's name; anything else is a user error."""
    axis = value.strip().lower()
    if axis not in AXES:
        raise CtsliceError(f"axis must be {', '.join(AXES)}, got {value!r}")
    return axis


def view(volume: np.ndarray, axis: str, index: int) -> np.ndarray:
    """One plane of a cached (slice, row, column) LPS volume, as a radiologist looks at it: axial as stored
    (patient's right on the image's left, anterior up); coronal and sagittal with superior up (sagittal with
    anterior on the left)."""
    if axis == "axial":
        return volume[index]
    if axis == "coronal":
        return volume[::-1, index, :]
    if axis == "sagittal":
        return volume[::-1, :, index]
    raise CtsliceError(f"axis must be axial, coronal or sagittal, got {axis!r}")


def plane_count(shape: tuple[int, int, int], axis: str) -> int:
    return shape[AXES.index(parse_axis(axis))]


def even_positions(count: int, n: int) -> list[int]:
    """n evenly spaced indices in [0, count), away from the very ends; all of them when count <= n."""
    if count <= n:
        return list(range(count))
    return [int(round(x)) for x in np.linspace(0, count - 1, n + 2)[1:-1]]

"""The one colour table for label overlays: `cache show`, training figures, evaluation figures and the colour
tables exported beside predictions all colour a structure the same way.

Colours are fixed by label index: index 0 (background) is transparent black; indices 1..20 take matplotlib's
tab20 colours without its greys (distinct, and the first ones most distinct), later ones step the hue by the golden angle with
alternating lightness, so 117 structures stay distinguishable and neighbours in the label map differ.
"""

from __future__ import annotations

import colorsys

import numpy as np

# matplotlib's tab20, reordered so that the first ten are the saturated ones, with its two greys replaced by
# teal and crimson: a grey label is lost on a grey CT.
_TAB20 = [
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
    (227, 119, 194), (0, 150, 136), (188, 189, 34), (23, 190, 207), (174, 199, 232), (255, 187, 120),
    (152, 223, 138), (255, 152, 150), (197, 176, 213), (196, 156, 148), (247, 182, 210), (180, 0, 60),
    (219, 219, 141), (158, 218, 229),
]
_GOLDEN = 0.618033988749895


def label_color(index: int) -> tuple[int, int, int]:
    """RGB (0-255) of label `index`; (0, 0, 0) for background."""
    if index <= 0:
        return (0, 0, 0)
    if index <= len(_TAB20):
        return _TAB20[index - 1]
    hue = (index * _GOLDEN) % 1.0
    lightness = (0.45, 0.6, 0.35)[index % 3]
    r, g, b = colorsys.hls_to_rgb(hue, lightness, 0.75)
    return (round(r * 255), round(g * 255), round(b * 255))


def color_table(num_labels: int) -> np.ndarray:
    """uint8 (num_labels, 3): the RGB of every label index, for indexing a label image (`table[labels]`)."""
    return np.array([label_color(i) for i in range(num_labels)], dtype=np.uint8)

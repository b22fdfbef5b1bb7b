"""Prints MONAI's normalised surface Dice (`use_subvoxels=True`, DeepMind's surfel definition) on the cases of
surface_dice_cases.py, next to ctslice's: the expected values written down in test_surface_dice_reference.py.
Not a test (the suite does not depend on MONAI); run it in a separate environment that has MONAI:

    python3 -m venv /tmp/monai-venv && /tmp/monai-venv/bin/pip install monai torch numpy scipy nibabel
    cd tests && PYTHONPATH=../src /tmp/monai-venv/bin/python reference_monai_nsd.py
"""

from __future__ import annotations

import warnings

import monai
import numpy as np
import torch
from monai.metrics import compute_surface_dice

import surface_dice_cases as cases
from ctslice.evaluate.metrics import surface_dice


def monai_nsd(pred: np.ndarray, ref: np.ndarray, spacing, tolerance: float) -> dict[int, float]:
    """Per class 1..max: compute_surface_dice on one-hot [1, C, ...] tensors, background channel included so
    that channel c is class c."""
    classes = int(max(pred.max(), ref.max(), 1)) + 1

    def onehot(v):
        return torch.nn.functional.one_hot(torch.from_numpy(v.astype(np.int64)), classes).permute(3, 0, 1, 2)[None]

    nsd = compute_surface_dice(onehot(pred), onehot(ref), class_thresholds=[tolerance] * classes,
                               include_background=True, spacing=list(spacing), use_subvoxels=True)
    return {c: float(nsd[0, c]) for c in range(1, classes)}


def main() -> None:
    warnings.simplefilter("ignore")  # MONAI warns for every class absent from a volume
    print(f"MONAI {monai.__version__}, torch {torch.__version__}, numpy {np.__version__}")
    everything = {**cases.constructed(), "demo_like": cases.demo_like(), "real_subject": cases.real_subject()}
    for name, (pred, ref, spacing, tol) in everything.items():
        theirs = monai_nsd(pred, ref, spacing, tol)
        ours = {c: surface_dice(pred == c, ref == c, spacing, tol) for c in theirs}
        worst = max((abs(theirs[c] - ours[c]) for c in theirs if not np.isnan(theirs[c])), default=0.0)
        print(f"{name}: spacing {spacing}, tolerance {tol}, largest |MONAI - ours| {worst:.2e}")
        print("    " + repr({c: round(v, 6) for c, v in theirs.items() if not (np.isnan(v) and c > 3)}))


if __name__ == "__main__":
    main()

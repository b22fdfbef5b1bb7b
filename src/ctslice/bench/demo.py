"""Benchmark datasets and caches, generated once into a folder and reused while their spec is unchanged."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

from ..synthetic import DemoSpec, generate_demo_dataset


def ensure_demo_dataset(folder: Path, spec: DemoSpec) -> Path:
    """Generate `spec` into `folder` unless it already holds exactly that (spec.json records what it holds)."""
    folder = Path(folder)
    stamp = folder / "spec.json"
    wanted = json.dumps(asdict(spec), sort_keys=True)
    if stamp.is_file() and stamp.read_text() == wanted:
        return folder
    if folder.exists():
        shutil.rmtree(folder)
    generate_demo_dataset(folder, spec)
    stamp.write_text(wanted)
    return folder


def benchmark_spec(subjects: int, size: int, slices: tuple[int, int], seed: int = 0) -> DemoSpec:
    """Demo volumes at CT-like in-plane spacing (1.2-1.5 mm), so 512 px slices look like real ones."""
    return DemoSpec(subjects=subjects, size=size, slices=slices, spacing_mm=(1.2, 1.5),
                    slice_thickness_mm=(1.5, 3.0), missing_mask_fraction=0.05, seed=seed)

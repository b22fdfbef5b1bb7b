"""The intensity scheme a run trains with, resolved once from the config and the cache's manifest and stored in
every checkpoint, so evaluation and prediction transform inputs exactly as training did
(`data.transforms.apply_intensity`)."""

from __future__ import annotations

from pathlib import Path

from ..cache.manifest import Manifest
from ..config import TrainConfig
from ..errors import CacheError


def resolve_intensity(cfg: TrainConfig, manifest: Manifest, cache: Path | str) -> dict:
    """{"clip": [lo, hi], "shift": a, "scale": b}.

    'window': clip to [window_min, window_max] (default: the cache's own HU clip) and map it to [0, 1].
    'ct': nnU-Net's CT normalisation: clip to the foreground's 0.5 and 99.5 percentiles, subtract its mean,
    divide by its std (the manifest's statistics["intensity"]; a cache without them stops here, naming it).
    """
    if cfg.intensity == "ct":
        stats = (manifest.statistics or {}).get("intensity") or {}
        missing = [k for k in ("mean", "std", "p00_5", "p99_5") if stats.get(k) is None]
        if missing:
            raise CacheError(f"{cache}: the 'ct' intensity scheme needs the foreground intensity statistics "
                             f"({', '.join(missing)} missing in the manifest): rebuild the cache with this ctslice "
                             f"(`ctslice preprocess --force`) or use intensity = \"window\"")
        if not float(stats["std"]) > 0 or not float(stats["p99_5"]) > float(stats["p00_5"]):
            raise CacheError(f"{cache}: degenerate foreground intensity statistics {stats}")
        return {"clip": [float(stats["p00_5"]), float(stats["p99_5"])], "shift": float(stats["mean"]),
                "scale": float(stats["std"])}
    lo = float(manifest.settings.hu_min if cfg.window_min is None else cfg.window_min)
    hi = float(manifest.settings.hu_max if cfg.window_max is None else cfg.window_max)
    if not hi > lo:
        raise CacheError(f"intensity window must have window_max > window_min, got [{lo}, {hi}]")
    return {"clip": [lo, hi], "shift": lo, "scale": hi - lo}

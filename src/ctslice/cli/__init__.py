"""Command line: thin commands over the library. Heavy imports happen inside the commands so `--help` is instant."""

from . import bench_incremental, bench_loader, bench_preprocess, bench_safety, cache, preprocess  # noqa: F401, E501
from .app import app

__all__ = ["app"]

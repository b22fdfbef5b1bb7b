"""Command line: thin commands over the library. Heavy imports happen inside the commands so `--help` is instant."""

# (imported to register their commands)
from . import bench_incremental, bench_loader, bench_preprocess, bench_train, cache, preprocess, train  # noqa: F401
from .app import app

__all__ = ["app"]

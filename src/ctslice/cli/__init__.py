"""Command line: thin commands over the library. Heavy imports happen inside the commands so `--help` is instant."""

from . import (  # noqa: F401  (register commands)
    bench_incremental, bench_loader, bench_preprocess, bench_safety, cache, evaluate, predict, preprocess,
)
from .app import app

__all__ = ["app"]

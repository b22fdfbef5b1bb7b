"""Command line: thin commands over the library. Heavy imports happen inside the commands so `--help` is instant."""

from . import (  # noqa: F401  (imported to register their commands)
    bench_incremental, bench_loader, bench_metrics, bench_predict, bench_preprocess, bench_safety, bench_store, bench_train, cache,
    bench_scale, cv_summary, evaluate, predict, preprocess, train,
)
from .app import app

__all__ = ["app"]

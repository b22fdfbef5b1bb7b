"""`ctslice bench ...` commands (see the module that registers them)."""

from .app import bench_app  # noqa: F401

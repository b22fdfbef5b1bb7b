"""Stage 1: NIfTI subjects -> zarr slice cache. `run_preprocess` is the entry point."""

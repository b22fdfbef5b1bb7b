"""`ctslice bench predict`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from .app import bench_app, console, out, user_errors


@bench_app.command("predict")
def bench_predict(
    device: Annotated[str, typer.Option(help="cpu, cuda, or auto (the CPU, and CUDA too when there is one).")] = "auto",
    size: Annotated[int, typer.Option(help="Slice size in pixels.")] = 512,
    classes: Annotated[int, typer.Option(help="Model outputs (TotalSegmentator v2: 117 structures + background).")
                       ] = 118,
    slices: Annotated[int, typer.Option(min=1, help="Slices timed per row (after one warm-up slice).")] = 4,
    batch_size: Annotated[int, typer.Option(min=1, help="Slices per batch at most ([loader] batch_size).")] = 16,
    memory_gib: Annotated[float, typer.Option(help="[evaluate] inference_memory_gib: lowers the batch to fit.")
                          ] = 4.0,
    json_file: Annotated[Optional[Path], typer.Option("--json", help="Also write the results here.")] = None,
) -> None:
    """Slices per second of the real model size (default U-Net, 118 outputs) at 512x512, run as inference ran
    before (contiguous memory format) and as evaluate and predict run it now (channels-last, inference mode, batch
    fitted to the memory budget), on the same random slices; whether both give the same labels.

    About a minute on a 2-core CPU with the defaults. Example (a GPU machine): ctslice bench predict --slices 256
    """
    with user_errors():
        import torch

        from ..bench.predict import format_table, run_predict_benchmark
        from ..errors import CtsliceError

        if device == "auto":
            devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        elif device == "cuda" and not torch.cuda.is_available():
            raise CtsliceError("device cuda asked for, but no CUDA GPU is available")
        elif device in ("cpu", "cuda"):
            devices = [device]
        else:
            raise CtsliceError(f"--device is cpu, cuda or auto, got {device!r}")
        log = lambda message: console.print(message, highlight=False)  # noqa: E731
        result = run_predict_benchmark(devices, size, classes, slices, batch_size, memory_gib, log=log)
        for line in format_table(result):
            out.print(line, highlight=False)
        if json_file:
            json_file.write_text(json.dumps(result, indent=1))

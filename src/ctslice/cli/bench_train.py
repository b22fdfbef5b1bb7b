"""`ctslice bench train`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..config import LoaderConfig, TrainConfig
from .app import bench_app, console, out, user_errors
from .bench_loader import parse_worker_counts


@bench_app.command("train")
def bench_train(
    cache: Annotated[Optional[Path], typer.Option(help="An existing cache (default: the make-train demo cached at "
                                                       "--size px under --out, built once).")] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the generated demo data and cache.")] = Path(
        "bench-out"),
    device: Annotated[Optional[str], typer.Option(
        help=f"auto, cpu or cuda. [default: the config's, else {TrainConfig().device}]")] = None,
    size: Annotated[int, typer.Option(help="Slice size in pixels of the generated cache.")] = 128,
    batch_size: Annotated[Optional[int], typer.Option(
        help=f"Slices per batch. [default: the config's, else {LoaderConfig().batch_size}]")] = None,
    workers: Annotated[Optional[str], typer.Option(
        help=f"DataLoader worker counts to compare, e.g. 0,2,N; the first is the reported one. "
             f"[default: the config's, else {LoaderConfig().workers}]")] = None,
    steps: Annotated[int, typer.Option(help="Timed training steps per row (after 3 warm-up steps).")] = 20,
    config: Annotated[Optional[Path], typer.Option(help="TOML file ([model], [train], [augment], [loader]); the "
                                                        "default is the real job's model.")] = None,
    classes: Annotated[Optional[int], typer.Option(help="Model outputs (default: the cache's labels; the real job "
                                                       "has 118).")] = None,
    compile_too: Annotated[bool, typer.Option("--compile", help="Also time the memory-fed steps under "
                                                                "torch.compile.")] = False,
    json_file: Annotated[Optional[Path], typer.Option("--json", help="Also write the results here.")] = None,
) -> None:
    """Samples/s of training steps of the real U-Net fed by the ctslice DataLoader and fed by the same batches
    already on the device; their ratio (target >= 0.95) and the data-wait fraction.

    Example (a GPU machine, what make bench-gpu runs): ctslice bench train --device cuda --size 512 --batch-size 16
    --workers 4,8,16 --classes 118 --compile --steps 50
    """
    with user_errors():
        from ..bench.train import ensure_demo_cache, format_table, run_train_benchmark
        from ..config import load_config

        # Options left out are None ("not given"), so the --config file's values stand (flags > file > defaults);
        # wandb is off whatever the file says: a benchmark logs nothing.
        counts = parse_worker_counts(workers) if workers else None
        cfg = load_config(config, {"train": {"device": device, "wandb": "disabled"},
                                   "loader": {"batch_size": batch_size, "workers": counts[0] if counts else None}})
        counts = counts or (cfg.loader.workers,)
        log = lambda message: console.print(message, highlight=False)  # noqa: E731
        if cache is None:
            cache = ensure_demo_cache(out_dir, size, log=log)
        result = run_train_benchmark(cache, cfg, counts, steps, log=log, classes=classes, compiled=compile_too)
        for line in format_table(result):
            out.print(line, highlight=False)
        if json_file:
            json_file.write_text(json.dumps(result, indent=1))

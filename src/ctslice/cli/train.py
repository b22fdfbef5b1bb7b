"""`ctslice train`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..config import LoaderConfig, TrainConfig
from .app import app, console, out, user_errors
from .storage import StorageOptions, opened

_T, _L = TrainConfig(), LoaderConfig()


@app.command()
def train(
    cache: Annotated[Optional[str], typer.Option(
        "--cache", "-c", help="Slice cache to train on, a folder or s3://bucket/prefix [default: with --resume the "
                              "run's own cache, else ./cache].")
    ] = None,
    out_dir: Annotated[Optional[Path], typer.Option(
        "--out", "-o", help="Run folder for checkpoints, history and figures: a new or empty folder, or the run "
                            "that --resume continues (default: --resume's folder when it is one, else a new "
                            "runs/<time>; a non-empty folder of another run or of other files is refused).")] = None,
    config: Annotated[Optional[list[Path]], typer.Option(
        help="TOML file with [train], [model], [loader], [augment]; repeat it to layer files, each over the ones "
             "before it (make train: configs/demo.toml, then ARGS' --config configs/nnunet2d.toml).")] = None,
    epochs: Annotated[Optional[int], typer.Option(help=f"Epochs. [default: {_T.epochs}]")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help=f"Slices per batch and process (GPU). [default: {_L.batch_size}]")] = None,
    lr: Annotated[Optional[float], typer.Option(
        "--lr", help=f"Peak learning rate. [default: {_T.learning_rate}]")] = None,
    scheduler: Annotated[Optional[str], typer.Option(
        help=f"cosine, plateau, poly or none. [default: {_T.scheduler}]")] = None,
    workers: Annotated[Optional[int], typer.Option(help=f"DataLoader workers. [default: {_L.workers}]")] = None,
    device: Annotated[Optional[str], typer.Option(help=f"auto, cpu, cuda, cuda:N or mps. [default: {_T.device}]")] = None,
    wandb: Annotated[Optional[str], typer.Option(
        help=f"offline, online (key from WANDB_API_KEY) or disabled. [default: {_T.wandb}]")] = None,
    fold: Annotated[Optional[int], typer.Option(
        help="Cross-validation: train on fold K (0 .. folds-1) of the cache's train+val subjects, validating on "
             "that fold (the test split is never used). [default: the cache's own train/val split]")] = None,
    folds: Annotated[Optional[int], typer.Option(
        help=f"Number of cross-validation folds (with --fold). [default: {_T.folds}]")] = None,
    resume: Annotated[Optional[Path], typer.Option(
        help="Continue a run exactly: its folder (uses checkpoint_last.pth, also one written mid-epoch on SIGTERM "
             "or Ctrl-C) or a checkpoint file. The run's settings and cache are the defaults; --epochs may be "
             "raised.")] = None,
    storage_option: StorageOptions = None,
) -> None:
    """Train the 2D U-Net on a slice cache: label map, split, HU clip and slice size come from its manifest.

    Example: ctslice train --cache cache --out runs/exp1 --epochs 20 --scheduler cosine --wandb offline

    Cross-validation: ctslice train --cache cache --out runs/fold0 --fold 0 --folds 5   (then --fold 1 ... 4)

    Several GPUs: torchrun --nproc_per_node 8 -m ctslice train --cache cache --out runs/exp1

    Writes RUN/config.json, label_map.json, training_history.json/.png, checkpoint_{epochN,last,best}.pth,
    sample_visualization.png and test_inference.png; wandb (offline by default) under RUN/wandb.
    """
    with user_errors():
        from ..config import load_config
        from ..train.progress import RichProgress
        from ..train.resume import resume_defaults
        from ..train.rundir import default_run_folder
        from ..train.run import run_training

        cache, run_settings = resume_defaults(resume, cache)  # `--resume RUN` alone continues the run as it was
        cfg = load_config(config or None, {
            "train": {"epochs": epochs, "learning_rate": lr, "scheduler": scheduler, "device": device,
                      "wandb": wandb, "fold": fold, "folds": folds},
            "loader": {"batch_size": batch_size, "workers": workers}}, run_settings=run_settings)
        out_dir = out_dir if out_dir is not None else default_run_folder(resume)
        cache = opened(cache, storage_option, config or None)
        result = run_training(cache, out_dir, cfg, resume=resume, progress=RichProgress(console))
        if not result.history:  # a rank > 0 of torchrun: rank 0 reports
            return
        last = result.history[-1] if result.history else {}
        final = last.get("val/dice")
        out.print(f"{result.out}: {len(result.history)} epochs, final val Dice "
                  f"{float('nan') if final is None else final:.4f}, best "
                  f"{float('nan') if result.best_score is None else result.best_score:.4f} ({result.best_checkpoint})",
                  highlight=False)


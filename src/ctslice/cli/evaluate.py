"""`ctslice evaluate`."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..config import EvaluateConfig, LoaderConfig
from .app import app, console, out, shown, user_errors
from .storage import StorageOptions, opened

_D, _L = EvaluateConfig(), LoaderConfig()


def evaluate_config(config: Optional[Path], evaluate: dict, loader: dict) -> tuple[EvaluateConfig, LoaderConfig]:
    """The [evaluate] and [loader] settings: flags (None = not given) > the TOML file > defaults."""
    from ..config import load_config

    resolved = load_config(config, {"evaluate": evaluate, "loader": loader})
    return resolved.evaluate, resolved.loader


@app.command()
def evaluate(
    checkpoint: Annotated[list[Path], typer.Option(
        "--checkpoint", metavar="<path>",
        help="Checkpoint of a training run; give it several times to average the models' probabilities (an "
             "ensemble: the folds of a cross-validation, or several seeds).")],
    cache: Annotated[Optional[str], typer.Option(help="Cache to evaluate on, a folder or s3://bucket/prefix "
                                                      "[default: the checkpoint's].")] = None,
    split: Annotated[str, typer.Option(help="Split of the cache: val, test or train.")] = "val",
    out_dir: Annotated[Optional[Path], typer.Option(
        "--out", help="Output folder [default: RUN/eval-<split>, with -ensemble<N> and -tta when they apply; RUN: "
                      "the first checkpoint's folder].")] = None,
    original_space: Annotated[bool, typer.Option(
        "--original-space", help="Score on each subject's original grid against its original masks (needs --data).",
    )] = False,
    data: Annotated[Optional[Path], typer.Option(
        help="Dataset folder the cache was built from (with --original-space only).")] = None,
    surface_tolerance: Annotated[Optional[float], typer.Option(
        help=f"Surface Dice tolerance in mm. [default: {_D.surface_tolerance_mm}]")] = None,
    save_predictions: Annotated[bool, typer.Option(
        "--save-predictions", help="Write each prediction as NIfTI on the original grid, with colour tables.",
    )] = False,
    split_masks: Annotated[bool, typer.Option(
        "--split-masks", help="With --save-predictions: one mask per structure (TotalSegmentator layout).")] = False,
    batch_size: Annotated[Optional[int], typer.Option(
        help=f"Slices per batch at most ([loader] batch_size; fewer when they would not fit [evaluate] "
             f"inference_memory_gib). [default: {_L.batch_size}]")] = None,
    workers: Annotated[Optional[int], typer.Option(
        help=f"Loader workers ([loader] workers). [default: {_L.workers}]")] = None,
    device: Annotated[Optional[str], typer.Option(
        help=f"auto (the CUDA GPU if there is one, else the CPU), cpu, cuda, cuda:N or mps (Apple GPU). "
             f"[default: {_D.device}]")] = None,
    tta: Annotated[Optional[str], typer.Option(
        help="Test-time augmentation: none, or a comma-separated list of shift (safe for any anatomy) and flip-lr "
             "(only for models trained with left-right mirroring; left/right pairs are swapped back). "
             f"[default: {_D.tta}]")] = None,
    config: Annotated[Optional[Path], typer.Option(help="TOML file with [evaluate] and [loader] sections.")] = None,
    storage_option: StorageOptions = None,
) -> None:
    """Score a trained model on every subject of a cache split, in 3D, per structure: Dice, IoU, surface Dice,
    volumes and detection; writes evaluation.json, per_class.csv, per_subject.csv and figures. Subjects the model
    was trained on (the checkpoint's recorded train split) are named in a warning, also in evaluation.json.

    Example: ctslice evaluate --checkpoint runs/demo/checkpoint_best.pth --split val --save-predictions

    Ensemble of folds: ctslice evaluate --checkpoint runs/fold0/checkpoint_best.pth --checkpoint
    runs/fold1/checkpoint_best.pth --split test --out runs/ensemble-test
    """
    with user_errors():
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        from ..errors import CtsliceError
        from ..evaluate.report import summary_table
        from ..evaluate.run import run_evaluation
        from ..preprocess.reference import open_reference

        if original_space and data is None:
            raise CtsliceError("--original-space needs --data DATA, the dataset folder the cache was built from")
        if data is not None and not original_space:
            raise CtsliceError("--data is used only with --original-space (scores on the original grid); add it or "
                               "leave --data out")
        if split_masks and not save_predictions:
            raise CtsliceError("--split-masks goes with --save-predictions")
        cfg, loader = evaluate_config(config, {"surface_tolerance_mm": surface_tolerance, "device": device,
                                               "tta": tta},
                                      {"batch_size": batch_size, "workers": workers})
        with Progress(TextColumn("evaluate"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      TextColumn("{task.description}"), console=console) as bar:
            task = bar.add_task("", total=None)
            result = run_evaluation(
                checkpoint, cfg, loader, cache=None if cache is None else opened(cache, storage_option, config), split=split, out=out_dir,
                reference=partial(open_reference, data) if original_space else None,
                save_predictions=save_predictions, split_masks=split_masks,
                progress=lambda done, total, sid: bar.update(task, completed=done, total=total, description=shown(sid)))
        for note in result.notes:
            console.print(f"note: {shown(note)}", highlight=False, soft_wrap=True)
        for warning in result.warnings:
            console.print(f"[yellow]warning[/] {shown(warning)}", highlight=False, soft_wrap=True)
        for sid, reason in result.skipped.items():
            console.print(f"[yellow]skipped[/] {shown(sid)}: {shown(reason)}", highlight=False)
        out.print(summary_table(result.summary, result.per_class))
        out.print(f"reports and figures in {shown(result.out)}", highlight=False)

"""`ctslice predict`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..config import EvaluateConfig, LoaderConfig
from ..errors import CtsliceError
from .app import app, console, out, shown, user_errors
from .evaluate import evaluate_config

_D, _L = EvaluateConfig(), LoaderConfig()


@app.command()
def predict(
    source: Annotated[Path, typer.Argument(
        help="A CT (.nii.gz / .nii, .nrrd, .mha / .mhd), a folder holding one DICOM CT series, or a folder of CT "
             "files (suffixes in any case, e.g. .NII.GZ; subfolders and hidden files are not read).")],
    checkpoint: Annotated[list[Path], typer.Option(
        "--checkpoint", metavar="<path>",
        help="Checkpoint of a training run; give it several times to average the models' probabilities (an "
             "ensemble: the folds of a cross-validation, or several seeds).")],
    out_path: Annotated[Optional[Path], typer.Option(
        "--out", help="Where predictions go. A name ending in .nii, .nii.gz, .nrrd, .mha or .dcm is the output file "
                      "(one CT only); any other name is a folder (created if needed) that gets <name>_seg.nii.gz "
                      "(or .nrrd, .mha, .dcm: see --format) per CT. Never an "
                      "input or the input folder, never a dataset's subject folder, segmentations/ or dataset "
                      "folder, never over a file predict did not write (see --overwrite). [default: CT_seg.nii.gz "
                      "beside a CT; FOLDER/predictions/ for a folder]",
    )] = None,
    split_masks: Annotated[bool, typer.Option(
        "--split-masks",
        help="Also one mask per structure: <ct>_seg/segmentations/<name>.nii.gz beside the output, in a folder "
             "predict creates.")] = False,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace earlier predictions of ctslice predict (those its ledger "
                            ".ctslice-predictions.json lists, unchanged since). Other files are never replaced.")
    ] = False,
    output_format: Annotated[Optional[str], typer.Option(
        "--format", help="nifti, nrrd, mha or dicom-seg (DICOM SEG referencing the series; DICOM input only). "
                         "[default: the input's kind: .nrrd -> .nrrd, .mha/.mhd -> .mha, NIfTI and DICOM -> NIfTI, "
                         "or the --out file's suffix]")] = None,
    series: Annotated[Optional[str], typer.Option(
        "--series", help="SeriesInstanceUID to read from a DICOM folder holding several series (without it, such "
                         "a folder is an error that lists them).")] = None,
    batch_size: Annotated[Optional[int], typer.Option(
        help=f"Slices per batch at most ([loader] batch_size; fewer when they would not fit [evaluate] "
             f"inference_memory_gib). [default: {_L.batch_size}]")] = None,
    device: Annotated[Optional[str], typer.Option(
        help=f"auto (the CUDA GPU if there is one, else the CPU), cpu, cuda, cuda:N or mps (Apple GPU). "
             f"[default: {_D.device}]")] = None,
    tta: Annotated[Optional[str], typer.Option(
        help="Test-time augmentation: none, or a comma-separated list of shift (safe for any anatomy) and flip-lr "
             "(only for models trained with left-right mirroring; left/right pairs are swapped back). "
             f"[default: {_D.tta}]")] = None,
    config: Annotated[Optional[Path], typer.Option(help="TOML file with [evaluate] and [loader] sections.")] = None,
) -> None:
    """Segment CTs that are in no cache: preprocessed as the checkpoint's training data was, predicted, and written
    as a uint8 label NIfTI on the CT's own grid with its header, plus label map JSON, Slicer .ctbl and ITK-SNAP
    label descriptions. A file that fails is reported and the others proceed; the exit code is then 1. A CT wider
    than the model's input (the checkpoint's slice size) gets a warning: the part outside is labelled background.

    Example: ctslice predict --checkpoint runs/demo/checkpoint_best.pth data/new_cts/ --out data/new_cts_seg/

    Example: ctslice predict --checkpoint runs/demo/checkpoint_best.pth dicom/series1/ --format dicom-seg
    """
    with user_errors():
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        from ..evaluate.outputs import OUTPUT_SUFFIXES
        from ..evaluate.predict import run_predict

        if output_format is not None and output_format not in OUTPUT_SUFFIXES:
            raise CtsliceError(f"--format {output_format}: expected one of {', '.join(OUTPUT_SUFFIXES)}")
        cfg, loader = evaluate_config(config, {"device": device, "tta": tta}, {"batch_size": batch_size})
        with Progress(TextColumn("predict"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
                      console=console) as bar:
            task = bar.add_task("", total=None)

            def advance(done: int, total: int, outcome) -> None:
                bar.update(task, completed=done, total=total, description=shown(outcome.input.name))
                for warning in outcome.warnings:
                    bar.console.print(f"[yellow]warning[/] {shown(warning)}", highlight=False, soft_wrap=True)
                if outcome.error:
                    bar.console.print(f"[red]failed[/] {shown(outcome.error)}", highlight=False, soft_wrap=True)

            outcomes = run_predict(checkpoint, source, out_path, cfg, loader, split_masks=split_masks,
                                   overwrite=overwrite, fmt=output_format, series=series, progress=advance)
        for o in outcomes:
            if o.output:
                speed = f" ({o.slices} slices, {o.slices_per_s:,.1f} slices/s)" if o.slices_per_s else ""
                out.print(f"{shown(o.input)} -> {shown(o.output)}{speed}", highlight=False)
        failed = [o for o in outcomes if o.error]
        if failed:
            console.print(f"[bold red]{len(failed)} of {len(outcomes)} file(s) failed[/]")
            raise typer.Exit(1)

"""`ctslice cv-summary`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .app import app, console, out, shown, user_errors


@app.command("cv-summary")
def cv_summary(
    runs: Annotated[list[Path], typer.Argument(help="Run folders of the folds (ctslice train --fold K --out ...).")],
    out_dir: Annotated[Path, typer.Option(
        "--out", help="Folder for cv_summary.json, .csv and .png (created; none of the runs nor inside one).")],
    which: Annotated[str, typer.Option(
        help="Each run's checkpoint to read the val results from: last (the final epoch) or best (the epoch of best "
             "val Dice, chosen on the same val subjects, so optimistic).")] = "last",
) -> None:
    """Gather the validation results of a cross-validation's folds into one table (per structure: mean, standard
    deviation, min and max of the val Dice over the folds, and each fold's value) and a figure.

    Example: ctslice cv-summary runs/fold0 runs/fold1 runs/fold2 runs/fold3 runs/fold4 --out runs/cv
    """
    with user_errors():
        from rich.table import Table

        from ..evaluate.cv_summary import cv_summary as summarise

        result = summarise(runs, out_dir, which)
        for note in result.notes:
            console.print(f"note: {shown(note)}", highlight=False, soft_wrap=True)
        table = Table(title=f"val Dice over {len(result.folds)} run(s) ({which} checkpoints)")
        for column in ("structure", "mean", "std", "min", "max", "folds"):
            table.add_column(column, justify="left" if column == "structure" else "right")
        for i, r in enumerate(result.rows):
            if i == len(result.rows) - 1:
                table.add_section()
            cells = ["-" if r["folds_scored"] == 0 else f"{r[k]:.3f}" for k in ("mean", "std", "min", "max")]
            table.add_row(shown(r["structure"]), *cells, str(r["folds_scored"]))
        out.print(table)
        out.print(f"table and figure in {shown(result.out)}", highlight=False)

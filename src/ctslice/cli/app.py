"""The typer apps and the one place where known errors become a one-line message and an exit code."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console

app = typer.Typer(
    help="ctslice: NIfTI CT segmentation datasets -> a self-describing zarr slice cache -> fast 2D training.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,  # help texts show [brackets] literally
)
cache_app = typer.Typer(help="Inspect, check and clean a slice cache.", no_args_is_help=True, rich_markup_mode=None)
bench_app = typer.Typer(help="Benchmarks that print numbers and ratios (not tests).", no_args_is_help=True,
                        rich_markup_mode=None)
app.add_typer(cache_app, name="cache")
app.add_typer(bench_app, name="bench")

console = Console(stderr=True)
out = Console(soft_wrap=True)


@contextmanager
def user_errors() -> Iterator[None]:
    """Known problems (bad input, unusable cache) end the command with one line, not a traceback."""
    from rich.markup import escape

    from ..errors import CtsliceError

    try:
        yield
    except CtsliceError as e:  # escaped: "[augment]" or a path with brackets is text, not rich markup
        console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        console.print("[red]interrupted[/]")
        raise typer.Exit(130) from None

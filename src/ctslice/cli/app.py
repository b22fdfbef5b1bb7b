"""The typer apps and the one place where known errors become a one-line message and an exit code."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.markup import escape

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


# C0 and C1 control characters (ESC starts terminal sequences; NUL, CR, newline forge or hide text), DEL, and the
# Unicode direction overrides that reorder what is shown.
_UNSHOWN = re.compile(r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def shown(text: object, keep_newlines: bool = False) -> str:
    """Text that carries names from disk (subject ids, file names, and messages naming them) as it is safe to
    print with rich: control characters written as escapes (ESC as \\x1b), so a folder name cannot move the cursor
    or recolour the terminal, and rich markup escaped, so '[red]' in a name is printed, not interpreted.
    `keep_newlines`: a block of lines built by ctslice (its own newlines kept, all else escaped)."""
    def escaped(match: re.Match) -> str:
        c = match.group()
        return c if keep_newlines and c == "\n" else f"\\x{ord(c):02x}" if ord(c) < 256 else f"\\u{ord(c):04x}"

    return escape(_UNSHOWN.sub(escaped, str(text)))


@contextmanager
def user_errors() -> Iterator[None]:
    """Known problems (bad input, unusable cache) end the command with one line, not a traceback."""
    from ..errors import CtsliceError

    try:
        yield
    except CtsliceError as e:
        console.print(f"[bold red]error:[/] {shown(e)}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        console.print("[red]interrupted[/]")
        raise typer.Exit(130) from None

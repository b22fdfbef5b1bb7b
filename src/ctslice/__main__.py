"""`python -m ctslice`: the same command line as the `ctslice` script."""

from .cli import app

app(prog_name="ctslice")

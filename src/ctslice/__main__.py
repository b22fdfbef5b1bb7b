"""`python -m ctslice`: the same as the `ctslice` command."""

from .cli import app

app()

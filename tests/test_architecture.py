"""The layout is the architecture: arrows point down only (cli -> stages -> shared contracts -> config), and the
three stages (preprocess, train, evaluate) are siblings that never import each other. What two stages share
moves below them (imaging/, model/, data/, cache/, view/). The allowed arrows are data, here."""

from __future__ import annotations

import ast
from pathlib import Path

import ctslice

PACKAGE = Path(ctslice.__file__).parent

# part of ctslice -> the parts it may import. A part is a subpackage or a top-level module.
LEAVES = {"errors", "colors", "metrics", "files", "text", "stopping", "__init__"}
_BASE = {"config", "errors", "files", "text"}  # what every part below the stages may use
ALLOWED = {
    "config": {"errors", "files", "text"},
    "imaging": _BASE,
    "cache": _BASE | {"imaging", "__init__"},
    "model": _BASE | {"cache"},
    "data": _BASE | {"cache", "imaging"},
    "view": _BASE | {"cache", "imaging", "colors"},
    "synthetic": _BASE | {"imaging"},
    "preprocess": _BASE | {"cache", "imaging", "colors"},
    "train": _BASE | {"data", "model", "cache", "imaging", "view", "colors", "metrics", "stopping"},
    "evaluate": _BASE | {"data", "model", "cache", "imaging", "view", "colors", "metrics", "stopping", "__init__"},
}
TOP = {"cli", "bench", "__main__"}  # the edges: they drive the stages and may import any part
STAGES = {"preprocess", "train", "evaluate"}


def _part(module: str) -> str:
    return module.split(".")[0]


def _imports(path: Path, root: Path = PACKAGE) -> set[str]:
    """The ctslice parts a source file imports, relative or absolute, at any depth (also inside functions)."""
    package = path.relative_to(root).parts[:-1]  # ("train",) for train/loop.py, () for a top-level module
    parts = {p.name.removesuffix(".py") for p in root.iterdir()}

    def top(name: str) -> str:  # `from ctslice import x` / `from .. import x`: a part, or a name of __init__
        return name if name in parts else "__init__"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {_part(a.name[len("ctslice."):]) for a in node.names if a.name.startswith("ctslice.")}
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                if node.module and node.module.startswith("ctslice."):
                    found.add(_part(node.module[len("ctslice."):]))
                elif node.module == "ctslice":
                    found |= {top(a.name) for a in node.names}
                continue
            base = package[:len(package) - (node.level - 1)] if node.level > 1 else package
            target = list(base) + (node.module.split(".") if node.module else [])
            if target:
                found.add(target[0])
            else:  # `from .. import __version__`, `from . import x` at the top
                found |= {top(a.name) for a in node.names}
    return found


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        part = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        graph.setdefault(part, set()).update(_imports(path) - {part})
    return graph


def test_every_arrow_points_down_and_stages_are_siblings():
    bad = []
    for part, targets in sorted(_graph().items()):
        if part in TOP:
            continue
        allowed = ALLOWED.get(part, set() if part in LEAVES else None)
        assert allowed is not None, f"ctslice/{part} is not in the architecture table of this test: add it"
        bad += [f"{part} -> {t}" for t in sorted(targets - allowed)]
    assert not bad, "imports against the layout: " + ", ".join(bad)


def test_the_table_itself_keeps_stages_apart_and_leaves_below():
    for stage in STAGES:
        assert not ALLOWED[stage] & STAGES, stage
    for part, allowed in ALLOWED.items():
        assert not allowed & (TOP | STAGES), part


def test_the_walker_sees_relative_absolute_and_nested_imports(tmp_path):
    fake = tmp_path / "ctslice"
    for part in ("train", "evaluate", "preprocess", "cache"):
        (fake / part).mkdir(parents=True)
    (fake / "errors.py").write_text("")
    (fake / "train" / "x.py").write_text(
        "from ..evaluate.run import a\nfrom . import loop\nimport ctslice.preprocess.run\n"
        "def f():\n    from .. import errors, __version__\n    from ..cache import store\n")
    assert _imports(fake / "train" / "x.py", fake) == {
        "evaluate", "train", "preprocess", "cache", "errors", "__init__"}

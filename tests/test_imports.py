"""Imports run one way, from the entry points down to the helpers: no cycles.

The walk reads every module of ``src/xferclass`` with :mod:`ast` and records
each import of another module of the package, at the top of the file or inside
a function (the package imports lazily, and a lazy import that closes a cycle
still ties the two modules together). ``import xferclass``, ``from xferclass
import fit`` and ``from . import __version__`` import the package's
``__init__``. A cycle is reported as the chain of modules that closes it, with
the file and line of each import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import xferclass

SOURCE = Path(xferclass.__file__).parent
PACKAGE = "xferclass"

#: An import of one module by another: (importer, imported) -> "file:line".
Edges = dict[tuple[str, str], str]


def _imported(node: ast.Import | ast.ImportFrom, modules: set[str]) -> list[str]:
    """The package's modules that the import statement ``node`` loads."""
    if isinstance(node, ast.Import):
        found = []
        for alias in node.names:
            parts = alias.name.split(".")
            if parts[0] == PACKAGE:
                found.append(parts[1] if len(parts) > 1 and parts[1] in modules else "__init__")
        return found
    if node.level == 0:
        parts = (node.module or "").split(".")
        if parts[0] != PACKAGE:
            return []
        within = parts[1:]
    elif node.level == 1:
        within = node.module.split(".") if node.module else []
    else:
        return []  # no subpackages: a deeper relative import leaves the package
    if within:
        return [within[0]] if within[0] in modules else []
    # ``from . import name``: a submodule, or a name of the package's __init__.
    return [alias.name if alias.name in modules else "__init__" for alias in node.names]


def import_edges(source: Path) -> Edges:
    """Every import of a module of the package by another, wherever it stands."""
    files = {path.stem: path for path in sorted(source.glob("*.py"))}
    modules = set(files)
    edges: Edges = {}
    for name, path in files.items():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for target in _imported(node, modules):
                if target != name:
                    edges.setdefault((name, target), f"{path.name}:{node.lineno}")
    return edges


def find_cycle(edges: Edges) -> list[str]:
    """One import cycle as ``["a.py:3 imports b", "b.py:9 imports a"]``, or ``[]``."""
    graph: dict[str, list[str]] = {}
    for importer, imported in sorted(edges):
        graph.setdefault(importer, []).append(imported)
    state: dict[str, str] = {}  # "open" while on the current path, then "done"
    path: list[str] = []

    def visit(module: str) -> list[str]:
        state[module] = "open"
        path.append(module)
        for target in graph.get(module, []):
            if state.get(target) == "open":
                chain = [*path[path.index(target) :], target]
                return [f"{edges[(a, b)]} imports {b}" for a, b in zip(chain, chain[1:])]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        path.pop()
        state[module] = "done"
        return []

    for module in sorted(graph):
        if module not in state:
            found = visit(module)
            if found:
                return found
    return []


def test_the_package_has_no_import_cycle() -> None:
    edges = import_edges(SOURCE)
    assert ("training", "_engine") in edges  # the walk sees the package
    cycle = find_cycle(edges)
    assert cycle == [], "import cycle: " + " -> ".join(cycle)


def test_the_walk_finds_lazy_and_package_cycles(tmp_path: Path) -> None:
    (tmp_path / "__init__.py").write_text("from .top import run\n")
    (tmp_path / "top.py").write_text("from . import helper\n\ndef run():\n    pass\n")
    (tmp_path / "helper.py").write_text("import os\n\ndef f():\n    from .top import run\n")
    (tmp_path / "leaf.py").write_text("from ._other import x\nfrom .. import y\n")
    edges = import_edges(tmp_path)
    assert find_cycle(edges) == ["top.py:1 imports helper", "helper.py:4 imports top"]
    (tmp_path / "helper.py").write_text("def f():\n    from xferclass import run\n")
    assert find_cycle(import_edges(tmp_path)) == [
        "__init__.py:1 imports top",
        "top.py:1 imports helper",
        "helper.py:2 imports __init__",
    ]
    (tmp_path / "helper.py").write_text("def f():\n    import xferclass.top\n")
    assert find_cycle(import_edges(tmp_path)) == [
        "top.py:1 imports helper",
        "helper.py:2 imports top",
    ]
    (tmp_path / "helper.py").write_text("import json\n")
    assert find_cycle(import_edges(tmp_path)) == []

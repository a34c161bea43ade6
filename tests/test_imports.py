"""Imports run one way, from the entry points down to the helpers: no cycles, and no
subpackage imports one above it.

The walk reads every module of ``src/xferclass`` (its subpackages included) with
:mod:`ast` and records each import of another module of the package, at the top of
the file or inside a function (the package imports lazily, and a lazy import that
closes a cycle still ties the two modules together). Modules are named by their dotted
path under ``xferclass`` (``auto._search``); a package's ``__init__`` by the package's
name (``auto``), the top one as ``__init__``. A cycle is reported as the chain of
modules that closes it, with the file and line of each import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import xferclass

SOURCE = Path(xferclass.__file__).parent
PACKAGE = "xferclass"

#: The subpackages, lowest first: each may import only those before it.
LAYERS = (
    "core", "data", "backbones", "runtime", "training", "evaluation", "auto", "deploy", "review",
)  # fmt: skip

#: An import of one module by another: (importer, imported) -> "file:line".
Edges = dict[tuple[str, str], str]


def _modules(source: Path) -> dict[str, Path]:
    """Every module under ``source`` by its dotted name (see the module's docs)."""
    found = {}
    for path in sorted(source.rglob("*.py")):
        parts = list(path.relative_to(source).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1] or ["__init__"]
        found[".".join(parts)] = path
    return found


def _package_of(name: str, path: Path) -> list[str]:
    """The package a module's relative imports start from, as parts under the top."""
    parts = [] if name == "__init__" else name.split(".")
    return parts if path.name == "__init__.py" else parts[:-1]


def _resolve(parts: list[str], modules: set[str]) -> str:
    """The module ``parts`` name, or the deepest package above it that exists."""
    while parts:
        name = ".".join(parts)
        if name in modules:
            return name
        parts = parts[:-1]
    return "__init__"


def _imported(node: ast.Import | ast.ImportFrom, here: list[str], modules: set[str]) -> list[str]:
    """The package's modules that the import statement ``node`` loads."""
    if isinstance(node, ast.Import):
        return [_resolve(alias.name.split(".")[1:], modules)
                for alias in node.names if alias.name.split(".")[0] == PACKAGE]  # fmt: skip
    if node.level == 0:
        parts = (node.module or "").split(".")
        if parts[0] != PACKAGE:
            return []
        base = parts[1:]
    else:
        if node.level - 1 > len(here):
            return []  # leaves the package
        base = here[: len(here) - (node.level - 1)] + (
            node.module.split(".") if node.module else []
        )
    found = []
    for alias in node.names:  # ``from x import name``: a submodule, or a name of x
        child = ".".join([*base, alias.name])
        found.append(child if child in modules else _resolve(list(base), modules))
    return found


def import_edges(source: Path) -> Edges:
    """Every import of a module of the package by another, wherever it stands."""
    files = _modules(source)
    modules = set(files)
    edges: Edges = {}
    for name, path in files.items():
        here = _package_of(name, path)
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for target in _imported(node, here, modules):
                if target != name:
                    where = path.relative_to(source).as_posix()
                    edges.setdefault((name, target), f"{where}:{node.lineno}")
    return edges


def layer(module: str) -> int:
    """The layer of a module: its subpackage's place in :data:`LAYERS`; the top's
    modules (``__init__``, ``cli``, ``__main__``) stand above them all."""
    head = module.split(".")[0]
    return LAYERS.index(head) if head in LAYERS else len(LAYERS)


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
    assert ("training", "training._engine") in edges  # the walk sees the package
    cycle = find_cycle(edges)
    assert cycle == [], "import cycle: " + " -> ".join(cycle)


def test_every_subpackage_imports_only_those_below_it() -> None:
    upward = [f"{where}: {a} imports {b}" for (a, b), where in sorted(import_edges(SOURCE).items())
              if layer(b) > layer(a) or (layer(b) == layer(a) < len(LAYERS)
                                         and a.split(".")[0] != b.split(".")[0])]  # fmt: skip
    assert upward == []


def test_each_subpackage_says_what_it_owns_and_may_import() -> None:
    edges = import_edges(SOURCE)
    for name in LAYERS:
        text = ast.get_docstring(ast.parse((SOURCE / name / "__init__.py").read_text())) or ""
        said = text.split("may import")[-1] if "may import" in text else ""
        used = {b.split(".")[0] for (a, b) in edges if a.split(".")[0] == name} - {name}
        assert "may import" in text or "imports nothing" in text, name
        if "every part but" in said:
            assert not used & {p for p in LAYERS if f"``{p}``" in said}, name
        else:
            assert all(f"``{p}``" in said for p in used), (name, sorted(used))


def test_the_top_of_the_package_is_short() -> None:
    entries = [p.name for p in SOURCE.iterdir() if p.name != "__pycache__"]
    # __init__, __main__, cli, py.typed and one folder per layer, nothing else.
    assert len(entries) <= 4 + len(LAYERS), sorted(entries)
    assert {p for p in LAYERS} <= set(entries)


def test_the_walk_finds_lazy_and_package_cycles(tmp_path: Path) -> None:
    (tmp_path / "__init__.py").write_text("from .top import run\n")
    (tmp_path / "top.py").write_text("from . import helper\n\ndef run():\n    pass\n")
    (tmp_path / "helper.py").write_text("import os\n\ndef f():\n    from .top import run\n")
    (tmp_path / "leaf.py").write_text("from ._other import x\nfrom ... import y\n")
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
    # Subpackages: a relative import two levels up, and one into a sibling package.
    (tmp_path / "low").mkdir()
    (tmp_path / "low" / "__init__.py").write_text("")
    (tmp_path / "low" / "a.py").write_text("from ..high import b\n")
    (tmp_path / "high").mkdir()
    (tmp_path / "high" / "__init__.py").write_text("")
    (tmp_path / "high" / "b.py").write_text("def g():\n    from ..low.a import x\n")
    assert find_cycle(import_edges(tmp_path)) == [
        "high/b.py:2 imports low.a",
        "low/a.py:1 imports high.b",
    ]


def test_every_name_the_benchmarks_and_examples_import_from_the_package_exists() -> None:
    """A module moved in the package must not leave a script importing its old path."""
    import importlib

    root = SOURCE.parents[1]
    missing = []
    for script in sorted([*root.glob("benchmarks/*.py"), *root.glob("examples/*.py")]):
        for node in ast.walk(ast.parse(script.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ImportFrom) or not (node.module or "").startswith(PACKAGE):
                continue
            module = importlib.import_module(node.module or PACKAGE)
            for alias in node.names:
                if hasattr(module, alias.name):
                    continue
                try:
                    importlib.import_module(f"{node.module}.{alias.name}")
                except ImportError:
                    missing.append(f"{script.name}:{node.lineno} {node.module}.{alias.name}")
    assert not missing, missing

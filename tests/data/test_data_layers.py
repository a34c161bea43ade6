"""The data modules import one way, and no module imports another's private names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[2] / "src" / "xferclass"

#: Where each module checked here lives.
FILES = {
    "data": "data/__init__.py", "_pipeline": "data/_pipeline.py",
    "_filecheck": "data/_filecheck.py", "_folders": "data/_folders.py",
    "_decode": "data/_decode.py", "_exif": "data/_exif.py",
    "_imagesize": "data/_imagesize.py", "export": "deploy/export.py",
    "_engine": "training/_engine.py", "inference": "evaluation/inference.py",
}  # fmt: skip

#: The data side, from the entry point down: each may import only those after it.
LAYERS = ["data", "_pipeline", "_filecheck", "_folders", "_decode", "_exif", "_imagesize"]
#: Modules that must use only public names of the package's other modules.
NO_PRIVATE_IMPORTS = [*LAYERS, "export", "_engine", "inference"]


def package_imports(module: str) -> list[tuple[str, list[str]]]:
    """``(module, names)`` of each import of another module of the package, lazy ones
    included; a module is named by the last part of its path (``..core._errors`` is
    ``_errors``, ``..data`` is ``data``)."""
    tree = ast.parse((SOURCE / FILES[module]).read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level >= 1:
            if node.module is None:
                found += [(alias.name, []) for alias in node.names]
            else:
                found.append((node.module.split(".")[-1], [a.name for a in node.names]))
    return found


@pytest.mark.parametrize("module", LAYERS)
def test_data_modules_import_one_way(module: str) -> None:
    below = set(LAYERS[LAYERS.index(module) + 1 :])
    above = set(LAYERS) - below
    wrong = [name for name, _ in package_imports(module) if name in above]
    assert not wrong, f"{module} imports {wrong}, which sit above it in {LAYERS}"


@pytest.mark.parametrize("module", NO_PRIVATE_IMPORTS)
def test_no_private_names_of_other_modules(module: str) -> None:
    private = [
        f"{name}.{item}"
        for name, items in package_imports(module)
        for item in items
        if item.startswith("_")
    ]
    assert not private, f"{module} imports private names {private}"


def test_the_data_side_loads_without_the_rest() -> None:
    """The low layers import nothing of the package beyond the layers and the helpers."""
    helpers = {"_errors", "_tables", "_log", "_args", "_facts"}
    for module in LAYERS:
        outside = {name for name, _ in package_imports(module)} - set(LAYERS) - helpers
        assert not outside, f"{module} imports {sorted(outside)}"

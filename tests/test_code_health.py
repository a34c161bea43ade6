"""The shape the code keeps so that it stays easy to change: every function of the package
fits on one screen, and the data package's front door (its ``__init__``) stays small
beside its parts."""

from __future__ import annotations

import ast
from pathlib import Path

import xferclass

PACKAGE = Path(xferclass.__file__).parent

#: The most lines a function may have, its docstring not counted.
MOST_LINES = 80


def _code_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    lines = (node.end_lineno or node.lineno) - node.lineno + 1
    first = node.body[0] if node.body else None
    if (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    ):
        lines -= (first.end_lineno or first.lineno) - first.lineno + 1
    return lines


def test_every_function_fits_on_one_screen() -> None:
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if _code_lines(node) > MOST_LINES:
                    where = path.relative_to(PACKAGE).as_posix()
                    long.append(f"{where}:{node.lineno} {node.name} ({_code_lines(node)})")
    assert not long, f"functions over {MOST_LINES} lines (docstrings not counted): {long}"


def test_data_module_is_a_small_front_door() -> None:
    lines = len((PACKAGE / "data" / "__init__.py").read_text(encoding="utf-8").splitlines())
    assert lines < 500, f"data/__init__.py has {lines} lines"

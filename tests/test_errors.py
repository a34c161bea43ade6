"""Every error xferclass raises on bad input is an XferclassError.

The walk reads every ``raise`` statement in ``src/`` with :mod:`ast` and fails
on one that creates a built-in exception (``ValueError(...)``, ``TypeError``,
...): those must be the classes of :mod:`xferclass._errors`, which subclass
both :class:`xferclass.XferclassError` and the built-in that callers catch.
A bare ``raise`` and ``raise error`` (re-raising a caught exception) are fine.
"""

from __future__ import annotations

import ast
import builtins
from pathlib import Path

import pytest

import xferclass
from xferclass import _errors

SOURCE = Path(xferclass.__file__).parent

#: Internal checks, not bad input: (file, exception class, why).
ALLOWED = {
    ("_imagenet.py", "RuntimeError"): "the packaged imagenet_classes.txt is damaged",
}


def _raised_class(node: ast.Raise) -> str | None:
    """The name of the class a ``raise`` creates, or ``None`` for a re-raise."""
    exc = node.exc
    if exc is None:
        return None
    if isinstance(exc, ast.Call):
        exc = exc.func
    if isinstance(exc, ast.Attribute):
        return exc.attr
    if isinstance(exc, ast.Name):
        return exc.id
    return None


def builtin_raises() -> list[str]:
    found = []
    for path in sorted(SOURCE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if not isinstance(node, ast.Raise):
                continue
            name = _raised_class(node)
            cls = getattr(builtins, name, None) if name else None
            if not (isinstance(cls, type) and issubclass(cls, Exception)):
                continue
            if (path.name, name) in ALLOWED:
                continue
            found.append(f"{path.relative_to(SOURCE)}:{node.lineno}: raise {name}")
    return found


def test_no_builtin_exception_is_raised_in_src():
    assert builtin_raises() == []


def test_the_walk_catches_a_builtin_raise(tmp_path, monkeypatch):
    (tmp_path / "bad.py").write_text("def f():\n    raise ValueError('x')\n")
    (tmp_path / "good.py").write_text(
        "def g(e):\n    try:\n        pass\n    except OSError as error:\n        raise\n"
        "    raise e\n"
    )
    monkeypatch.setattr(__import__(__name__), "SOURCE", tmp_path)
    assert builtin_raises() == ["bad.py:2: raise ValueError"]


@pytest.mark.parametrize("name", _errors.__all__)
def test_every_error_class_is_an_xferclass_error_and_a_builtin(name):
    cls = getattr(_errors, name)
    assert issubclass(cls, xferclass.XferclassError)
    if cls is not xferclass.XferclassError:
        assert any(base.__module__ == "builtins" and base is not Exception for base in cls.__mro__)


def test_bad_input_errors_are_caught_both_ways():
    from helpers import tiny_dataset, tiny_model

    for catch in (ValueError, xferclass.XferclassError):
        with pytest.raises(catch, match="epochs=-1"):
            xferclass.fit(tiny_model(), tiny_dataset(), epochs=-1, verbose=0)
    with pytest.raises(TypeError, match="model must be a keras.Model"):
        xferclass.fit("model.keras", tiny_dataset(), verbose=0)
    with pytest.raises(xferclass.InvalidArgumentError, match="num_classes=1"):
        xferclass.build_classifier("test_tiny", num_classes=1, weights=None)
